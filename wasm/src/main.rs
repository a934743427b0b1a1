//! Phase-1 prototype: /ping server + client request to influxd.
#![forbid(unsafe_code)]

#[cfg(target_os = "wasi")]
mod stream;

#[cfg(target_os = "wasi")]
fn main() {
    use http_types::{Method, Request, Response, StatusCode, Url};
    use wstd::iter::AsyncIterator;
    let args: Vec<String> = std::env::args().collect();
    wstd::runtime::block_on(async move {
        if let Some(addr) = args.get(1).filter(|a| a.as_str() == "client").and(args.get(2)) {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            let s = stream::Stream::connect(addr).await.unwrap();
            let mut req = Request::new(Method::Post, Url::parse(&format!("http://{addr}/query")).unwrap());
            req.set_body("q=SHOW+DATABASES");
            req.insert_header("content-type", "application/x-www-form-urlencoded");
            let mut res = async_h1::connect(s.clone(), req).await.unwrap();
            println!("{} {}", res.status(), res.body_string().await.unwrap());
            let req = Request::new(Method::Get, Url::parse(&format!("http://{addr}/ping")).unwrap());
            let res = async_h1::connect(s, req).await.unwrap();
            println!("keepalive ping: {}", res.status());
            return;
        }
        let listener = wstd::net::TcpListener::bind("127.0.0.1:18390").await.unwrap();
        println!("listening");
        let mut incoming = listener.incoming();
        while let Some(conn) = incoming.next().await {
            let conn = stream::Stream::new(conn.unwrap());
            wstd::runtime::spawn(async move {
                let r = async_h1::accept(conn, |req: Request| async move {
                    let status = if req.url().path() == "/ping" { StatusCode::NoContent } else { StatusCode::NotFound };
                    Ok(Response::new(status))
                })
                .await;
                if let Err(e) = r {
                    eprintln!("conn: {e}");
                }
            })
            .detach();
        }
    })
}

#[cfg(not(target_os = "wasi"))]
fn main() {
    eprintln!("influx-proxy-wasm: build with --target wasm32-wasip2");
    std::process::exit(2);
}
