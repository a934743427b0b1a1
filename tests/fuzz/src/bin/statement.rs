fn main() {
    afl::fuzz!(|data: &[u8]| influx_proxy_fuzz::statement(data, influx_proxy_fuzz::KNOWN_FAULTS));
}
