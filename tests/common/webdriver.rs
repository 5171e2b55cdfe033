//! A small W3C WebDriver client (JSON over HTTP/1.1 on a blocking `TcpStream`) driving
//! headless Chromium through `chromedriver`, both from Debian (`chromium`,
//! `chromium-driver`; `scripts/test` installs them).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{free_port, poll_until};

const INSTALL_HINT: &str =
    "install headless Chromium and its driver: `apt-get install -y chromium chromium-driver` (scripts/test does it)";

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_binary(names: &[&str]) -> PathBuf {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path_var)
        .chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/lib/chromium"),
        ])
        .collect();
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("none of {names:?} found in PATH, /usr/bin or /usr/lib/chromium: {INSTALL_HINT}");
}

/// A chromedriver process with one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session that
    /// records the browser console (`goog:loggingPrefs`).
    pub fn start() -> Browser {
        let chromedriver = find_binary(&["chromedriver"]);
        let chromium = find_binary(&["chromium", "chromium-browser"]);
        let port = free_port();
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; {INSTALL_HINT}",
                    chromedriver.display()
                )
            });
        let up = poll_until(Duration::from_secs(20), || {
            raw_request(port, "GET", "/status", None).is_some_and(|v| v["value"]["ready"] == true)
        });
        if !up {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!("chromedriver did not come up on port {port}");
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,900",
                             "--no-first-run", "--disable-extensions",
                             format!("--user-data-dir={}", profile.path().display())],
                },
                "goog:loggingPrefs": {"browser": "ALL"},
            }}
        });
        let r = raw_request(port, "POST", "/session", Some(caps));
        let Some(session) = r
            .as_ref()
            .and_then(|r| r["value"]["sessionId"].as_str())
            .map(str::to_string)
        else {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!("chromedriver opened no browser session: {r:?}; {INSTALL_HINT}");
        };
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    /// A command on the session; panics on a WebDriver error.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        let r = raw_request(self.port, method, &full, body)
            .unwrap_or_else(|| panic!("no answer from chromedriver to {method} {full}"));
        if r["value"].get("error").is_some() {
            panic!("{method} {full}: {}", r["value"]);
        }
        r["value"].clone()
    }

    /// Loads `url`.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css:?}: {v}"))
            .to_string()
    }

    /// Types `text` into an element (real key events).
    pub fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Clears an input.
    pub fn clear(&self, element: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        );
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        base64_decode(b64.as_str().unwrap())
    }

    /// Browser console entries since the last call (chromedriver's log endpoint).
    pub fn console(&self) -> Vec<Value> {
        self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = raw_request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One request to chromedriver; `None` when it cannot be reached or answers non-JSON.
fn raw_request(port: u16, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    // chromedriver keeps the connection open whatever the request says: read the head,
    // then exactly Content-Length bytes.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    while raw.len() < head_end + len {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    serde_json::from_slice(&raw[head_end..head_end + len]).ok()
}

/// Standard base64 → bytes (screenshots).
pub fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("chromedriver sends standard base64")
}
