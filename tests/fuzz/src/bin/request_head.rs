fn main() {
    afl::fuzz!(|data: &[u8]| influx_proxy_fuzz::request_head(data, influx_proxy_fuzz::KNOWN_FAULTS));
}
