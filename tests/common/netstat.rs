//! What the kernel and the broker's log say about a connection: bytes waiting unread at
//! the broker (`/proc/net/tcp`), and the client ports mosquitto accepted.

use super::Mosquitto;

/// Bytes waiting unread in the receive queue of mosquitto's end of the connection from
/// the local port `client_port` (mosquitto frozen: nothing reads them), from
/// `/proc/net/tcp`.
pub fn broker_rx_queue(broker_port: u16, client_port: u16) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
        (port(f[1]) == broker_port && port(f[2]) == client_port).then(|| {
            let rx = f[4].split(':').nth(1).unwrap();
            usize::from_str_radix(rx, 16).unwrap()
        })
    })
}

/// The client ports of the connections mosquitto accepted, from its log.
pub fn client_ports(broker: &Mosquitto, client_id: &str) -> Vec<u16> {
    let marker = "New client connected from 127.0.0.1:";
    broker
        .log()
        .lines()
        .filter(|l| l.contains(&format!(" as {client_id} ")))
        .filter_map(|l| l.split_once(marker))
        .map(|(_, r)| r.split(' ').next().unwrap().parse().unwrap())
        .collect()
}
