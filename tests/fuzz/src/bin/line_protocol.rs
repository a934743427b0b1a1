fn main() {
    afl::fuzz!(|data: &[u8]| influx_proxy_fuzz::line_protocol(data));
}
