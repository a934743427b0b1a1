//! `influx-proxy`: the native server. See README.md.
fn main() {
    todo!()
}
