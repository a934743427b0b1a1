//! The write benchmarks' load: line protocol bodies shaped like Telegraf's
//! system metrics (shared by `write` and `parse`).

use std::fmt::Write as _;

/// `lines` points of line protocol, body number `body`: four measurements
/// (cpu, mem, disk, net), 200 hosts in four regions, float/integer/boolean
/// fields, distinct nanosecond timestamps (one second apart, continuing from
/// the previous body).
pub fn line_protocol_body(body: usize, lines: usize) -> Vec<u8> {
    const REGIONS: [&str; 4] = ["us-west", "us-east", "eu-central", "ap-south"];
    const BASE_NS: u64 = 1_700_000_000_000_000_000;
    let mut out = String::with_capacity(lines * 100);
    for i in 0..lines {
        let n = body * lines + i;
        let host = n % 200;
        let region = REGIONS[host % REGIONS.len()];
        let ts = BASE_NS + n as u64 * 1_000_000_000;
        let v = (n * 7919 % 10_000) as f64 / 100.0;
        // Writing into a String cannot fail.
        let _ = match n % 4 {
            0 => writeln!(
                out,
                "cpu,host=server{host:03},region={region},cpu=cpu-total usage_idle={v},usage_user={}i,usage_system={:.2} {ts}",
                n % 100,
                100.0 - v
            ),
            1 => writeln!(
                out,
                "mem,host=server{host:03},region={region} used_percent={v},available={}i,swap_on={} {ts}",
                1_000_000 + n % 4096 * 1024,
                n % 2 == 0
            ),
            2 => writeln!(
                out,
                "disk,host=server{host:03},region={region},path=/var/lib,fstype=ext4 used={}i,free={}i,inodes_used={}i {ts}",
                n * 4096,
                1u64 << 34,
                n % 65_536
            ),
            _ => writeln!(
                out,
                "net,host=server{host:03},region={region},interface=eth{} bytes_recv={}i,bytes_sent={}i,err_in=0i {ts}",
                n % 2,
                n * 1500,
                n * 900
            ),
        };
    }
    out.into_bytes()
}
