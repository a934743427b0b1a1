fn main() {
    afl::fuzz!(|data: &[u8]| influx_proxy_fuzz::statement(data));
}
