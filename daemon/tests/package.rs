//! The Debian package built by `scripts/package`, installed into a scratch root with
//! `dpkg -x`: its control data (name, version, dependencies, the config as a conffile),
//! its files, the packaged binary's `--version`, `check-config` on the packaged config,
//! and `systemd-analyze verify` on the packaged unit.
//!
//! It needs the package, a release build (~10 minutes from scratch), so it is ignored by
//! `cargo test`; `.ci/run` runs `scripts/package` and then
//! `cargo test -p mqtt-sessions-daemon --test package -- --ignored`. The package is
//! `$MQTT_SESSIONS_DEB`, else the newest `target/debian/mqtt-sessions_*.deb` (under
//! `$CARGO_TARGET_DIR` when set).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The package under test.
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("MQTT_SESSIONS_DEB") {
        return PathBuf::from(p);
    }
    // Where `scripts/package` (cargo deb) wrote it: `$CARGO_TARGET_DIR/debian`, else the
    // workspace's `target/debian`.
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        )
        .join("debian");
    let newest = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mqtt-sessions_") && n.ends_with(".deb"))
        })
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
    newest.unwrap_or_else(|| {
        panic!(
            "no mqtt-sessions_*.deb in {}: run scripts/package first (or set MQTT_SESSIONS_DEB)",
            dir.display()
        )
    })
}

/// Runs `program args...`; panics with its output unless it succeeds.
fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (dpkg and systemd are Debian packages: apt-get install dpkg systemd)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the package: scripts/package, then --ignored"]
fn the_package_installs_a_binary_a_unit_and_a_config_that_work_together() {
    let deb = deb();
    let deb_s = deb.to_str().unwrap();

    // Control data.
    let info = text(&run("dpkg-deb", &["--field", deb_s]));
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} field in:\n{info}"))
            .to_string()
    };
    assert_eq!(field("Package"), "mqtt-sessions");
    assert!(
        field("Version").starts_with(VERSION),
        "{}",
        field("Version")
    );
    assert!(field("Depends").contains("libc6"), "{info}");
    let control = tempfile::tempdir().unwrap();
    run(
        "dpkg-deb",
        &["--control", deb_s, control.path().to_str().unwrap()],
    );
    let conffiles = fs::read_to_string(control.path().join("conffiles")).unwrap_or_default();
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/mqtt-sessions/config.toml"),
        "the config is not a conffile: {conffiles:?}"
    );
    // Installed, neither enabled nor started: the admin edits the config first.
    let postinst = fs::read_to_string(control.path().join("postinst")).unwrap_or_default();
    // (cargo-deb's "don't enable" snippet re-enables on upgrade only what was enabled.)
    assert!(
        !postinst.contains("deb-systemd-invoke start")
            && (postinst.contains("was-enabled")
                || !postinst.contains("deb-systemd-helper enable")),
        "postinst enables or starts the unit:\n{postinst}"
    );
    // Removing the package stops a running unit.
    let prerm = fs::read_to_string(control.path().join("prerm")).unwrap_or_default();
    assert!(
        prerm.contains("deb-systemd-invoke stop mqtt-sessions.service"),
        "prerm does not stop the unit:\n{prerm}"
    );

    // Into a scratch root.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    run("dpkg", &["-x", deb_s, r.to_str().unwrap()]);
    let bin = r.join("usr/bin/mqtt-sessions");
    let config = r.join("etc/mqtt-sessions/config.toml");
    let unit = r.join("usr/lib/systemd/system/mqtt-sessions.service");
    for f in [
        &bin,
        &config,
        &unit,
        &r.join("usr/share/doc/mqtt-sessions/copyright"),
        &r.join("usr/share/doc/mqtt-sessions/README.md"),
        &r.join("usr/share/doc/mqtt-sessions/CONFIG.md"),
    ] {
        assert!(f.is_file(), "{} is not in the package", f.display());
    }
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&bin), 0o755);
    // Readable by the unit's DynamicUser.
    assert_eq!(mode(&config), 0o644);
    assert!(
        fs::read_to_string(r.join("usr/share/doc/mqtt-sessions/copyright"))
            .unwrap()
            .contains("Apache")
    );

    // The packaged binary, on the packaged config.
    let bin_s = bin.to_str().unwrap();
    let version = text(&run(bin_s, &["--version"]));
    assert!(version.contains(VERSION), "{version}");
    let checked = text(&run(bin_s, &["check-config", config.to_str().unwrap()]));
    assert!(checked.contains("valid"), "{checked}");

    // The unit runs what the package installs: its command and config path exist.
    let unit_text = fs::read_to_string(&unit).unwrap();
    for line in unit_text.lines().filter(|l| l.starts_with("ExecStart")) {
        let (_, command) = line.split_once('=').unwrap();
        let mut words = command.split_whitespace();
        assert_eq!(words.next(), Some("mqtt-sessions"), "{line}");
        let rest: Vec<&str> = words.collect();
        let at = rest.iter().position(|w| *w == "--config").unwrap();
        let path = rest[at + 1].trim_start_matches('/');
        assert!(r.join(path).is_file(), "{line}: {path} not in the package");
    }
    // systemd-analyze resolves a bare command in /usr/local/bin and /usr/bin of this
    // machine: point it at the scratch root's binary instead.
    let local = unit_text
        .replace("=mqtt-sessions ", &format!("={bin_s} "))
        .replace(
            "/etc/mqtt-sessions/",
            &format!("{}/", r.join("etc/mqtt-sessions").display()),
        );
    let verify_dir = tempfile::tempdir().unwrap();
    let verify_unit = verify_dir.path().join("mqtt-sessions.service");
    fs::write(&verify_unit, local).unwrap();
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("systemd-analyze is missing: apt-get install systemd");
    let out = run(analyze, &["verify", verify_unit.to_str().unwrap()]);
    assert!(
        out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
