//! systemd's readiness protocol (`sd_notify`): when `NOTIFY_SOCKET` is set, the daemon
//! sends `READY=1` once every session is ready and `STOPPING=1` when it shuts down, as
//! datagrams on that unix socket (a path, or an abstract name starting with `@`).

use std::os::unix::net::UnixDatagram;

/// Sends state lines to the service manager, if there is one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`; does nothing when it is not set.
    pub fn from_env() -> Self {
        Notifier {
            socket: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    /// Sends `state` (e.g. `"READY=1"`); failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        match send(socket, state) {
            Ok(()) => tracing::debug!(socket = %socket, state, "service manager notified"),
            Err(e) => {
                tracing::warn!(socket = %socket, state, error = %e, "cannot notify the service manager")
            }
        }
    }
}

fn send(socket: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "abstract sockets need Linux",
            ));
        }
    }
    sock.send_to(state.as_bytes(), socket)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("mqtt-sessions-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let rx = UnixDatagram::bind_addr(&addr).unwrap();
            send(&format!("@{name}"), "STOPPING=1").unwrap();
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
    }
}
