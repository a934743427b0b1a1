//! The write path: `POST /write` (InfluxDB 1.x) and `POST /api/v2/write`
//! (InfluxDB 1.8's 2.x compatibility API, "Write data with the InfluxDB API").
//!
//! The body (plain or gzip) is validated whole, each point routed by its
//! measurement to its replica set, and each backend gets one request with just
//! its points, concurrently. Points without a timestamp get the proxy's time
//! (at the request's precision) so that every replica, and a later replay,
//! stores the same point.

use super::{allow, join_all, Proxy};
use crate::error::ProxyError;
use crate::http::{Method, Request, Response};
use crate::line_protocol::{normalize_precision, parse_points};
use crate::route::ReplicaSet;
use crate::storage::Storage;
use crate::transport::Transport;
use crate::write_queue::{Credentials, Record};
use std::borrow::Cow;
use std::io::Read;

/// Which write API the request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteApi {
    /// `/write?db=&rp=&precision=&u=&p=`
    V1,
    /// `/api/v2/write?bucket=db[/rp]&org=&precision=`
    V2,
}

/// Where a write goes on each backend.
struct WriteTarget {
    db: String,
    rp: Option<String>,
    /// Normalised to InfluxDB 1.x's `n`, `u`, `ms`, `s`, `m`, `h`; `None` = ns.
    precision: Option<String>,
    credentials: Credentials,
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    pub(super) async fn write(
        &self,
        request: &Request,
        api: WriteApi,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
        allow(request, &[Method::Post])?;
        let target = WriteTarget::from_request(request, api)?;
        let body = decode_body(request, self.config.max_body_bytes)?;
        let text = std::str::from_utf8(&body).map_err(|e| {
            ProxyError::BadRequest(format!(
                "unable to parse body: not valid UTF-8 at byte {}",
                e.valid_up_to()
            ))
        })?;
        let points = parse_points(text).map_err(|e| ProxyError::BadRequest(e.to_string()))?;

        // Given only when some point lacks a timestamp.
        let mut default_timestamp: Option<String> = None;
        // Route every point before sending anything: a point with no route
        // fails the whole write and nothing is written.
        // Per backend: its line protocol body and how many points it holds.
        let mut bodies: Vec<(Vec<u8>, u64)> = vec![(Vec::new(), 0); self.backends.len()];
        let mut last: Option<(&str, &ReplicaSet)> = None;
        for point in &points {
            let set = match last {
                Some((m, set)) if m == point.measurement => set,
                _ => {
                    let set = self.router.route(&point.measurement).ok_or_else(|| {
                        ProxyError::BadRequest(format!(
                            "no route for measurement \"{}\" (line {}): add a keymap or \"_default_\"",
                            point.measurement, point.line_number
                        ))
                    })?;
                    last = Some((&point.measurement, set));
                    set
                }
            };
            for &backend in set {
                let (out, count) = &mut bodies[backend];
                *count += 1;
                out.extend_from_slice(point.line.as_bytes());
                if !point.has_timestamp {
                    let ts = default_timestamp
                        .get_or_insert_with(|| self.default_timestamp(target.precision.as_deref(), now_ms));
                    out.push(b' ');
                    out.extend_from_slice(ts.as_bytes());
                }
                out.push(b'\n');
            }
        }

        let deliveries = join_all(
            bodies
                .into_iter()
                .enumerate()
                .filter(|(_, (_, count))| *count > 0)
                .map(|(backend, (body, points))| {
                    let record = Record::Write {
                        db: target.db.clone(),
                        rp: target.rp.clone(),
                        precision: target.precision.clone(),
                        credentials: target.credentials.clone(),
                        body,
                    };
                    async move { (backend, self.deliver(backend, record, points, now_ms).await) }
                })
                .collect(),
        )
        .await;
        self.settle(deliveries)?;
        Ok(Response::empty(204))
    }
}

impl WriteTarget {
    fn from_request(request: &Request, api: WriteApi) -> Result<WriteTarget, ProxyError> {
        let non_empty = |name: &str| request.param(name).filter(|v| !v.is_empty()).map(str::to_string);
        let (db, rp) = match api {
            WriteApi::V1 => {
                let db =
                    non_empty("db").ok_or_else(|| ProxyError::BadRequest("database is required".into()))?;
                (db, non_empty("rp"))
            }
            WriteApi::V2 => {
                let bucket =
                    non_empty("bucket").ok_or_else(|| ProxyError::BadRequest("bucket is required".into()))?;
                match bucket.split_once('/') {
                    Some((db, rp)) if !db.is_empty() => {
                        (db.to_string(), Some(rp).filter(|r| !r.is_empty()).map(str::to_string))
                    }
                    Some(_) => {
                        return Err(ProxyError::BadRequest(format!(
                            "bucket {bucket:?}: database is required"
                        )))
                    }
                    None => (bucket, None),
                }
            }
        };
        let precision = match normalize_precision(request.param("precision").unwrap_or(""))
            .map_err(ProxyError::BadRequest)?
        {
            "" | "n" | "ns" => None,
            p => Some(p.to_string()),
        };
        let credentials = Credentials {
            username: non_empty("u"),
            password: request.param("p").map(str::to_string),
            authorization: request.header("authorization").map(str::to_string),
        };
        Ok(WriteTarget { db, rp, precision, credentials })
    }
}

/// The body, gunzipped when `Content-Encoding: gzip`. Errors: bad gzip (400),
/// decoded size over `max_bytes` (413), another encoding (400).
pub(crate) fn decode_body(request: &Request, max_bytes: u64) -> Result<Cow<'_, [u8]>, ProxyError> {
    match request.header("content-encoding").map(str::trim) {
        None | Some("") | Some("identity") => Ok(Cow::Borrowed(&request.body)),
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::with_capacity(request.body.len().saturating_mul(4));
            flate2::read::MultiGzDecoder::new(&request.body[..])
                .take(max_bytes.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|e| ProxyError::BadRequest(format!("unable to decode gzip body: {e}")))?;
            if out.len() as u64 > max_bytes {
                return Err(ProxyError::TooLarge(format!(
                    "request body too large: over {max_bytes} bytes after gzip decoding"
                )));
            }
            Ok(Cow::Owned(out))
        }
        Some(other) => {
            Err(ProxyError::BadRequest(format!("unsupported Content-Encoding {other:?} (use gzip)")))
        }
    }
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    /// The timestamp given to the points of one request that have none:
    /// `now_ms` at `precision` (`None` = ns). At ns and µs precision it is also
    /// strictly greater than the one given to the previous request, so two
    /// requests within the same millisecond stay two points, as they would on
    /// one InfluxDB (which stamps them with its ns clock).
    fn default_timestamp(&self, precision: Option<&str>, now_ms: u64) -> String {
        let now = now_ms as u128;
        let (value, last) = match precision {
            None | Some("n") => (now * 1_000_000, Some(&self.last_default_ns)),
            Some("u") => (now * 1_000, Some(&self.last_default_us)),
            Some("ms") => (now, None),
            Some("s") => (now / 1_000, None),
            Some("m") => (now / 60_000, None),
            Some("h") => (now / 3_600_000, None),
            Some(_) => (now * 1_000_000, Some(&self.last_default_ns)),
        };
        let value = match last {
            Some(cell) => {
                let v = value.max(cell.get() + 1);
                cell.set(v);
                v
            }
            None => value,
        };
        value.to_string()
    }
}
