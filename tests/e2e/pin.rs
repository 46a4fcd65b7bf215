//! End-to-end tests of the client's TLS and server pinning: unknown, known
//! and changed keys, `--accept-new`, `--fingerprint`, `--plaintext`, `--ca`.
//! stdin is a pipe in all of them, so an unknown key is never asked about.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::harness::{wait_exit_or_kill, Client, Server};

/// Runs the client with `flags` and `script` on stdin; (exit code, stdout, stderr).
fn run(server: &Server, flags: &[&str], script: &str) -> (Option<i32>, String, String) {
    let mut cmd = Client::command_bare(server);
    run_cmd(&mut cmd, flags, script)
}

fn run_cmd(cmd: &mut Command, flags: &[&str], script: &str) -> (Option<i32>, String, String) {
    let mut child = cmd
        .args(["--listen-addr", "127.0.0.1"])
        .args(flags)
        // Never the developer's own ~/.config: each test names its file.
        .env("XDG_CONFIG_HOME", "/nonexistent-peerline-test")
        .env("HOME", "/nonexistent-peerline-test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peerline-client");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(script.as_bytes());
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_exit_or_kill(&mut child, Duration::from_secs(20));
    (
        status.and_then(|s| s.code()),
        t_out.join().unwrap(),
        t_err.join().unwrap(),
    )
}

fn login_script(user: &str) -> String {
    format!("/signup {user} pw-{user} pw-{user}\n/login {user} pw-{user}\n")
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn an_unknown_key_without_a_terminal_is_refused_with_exit_4() {
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("known_servers");
    let (code, out, err) = run(
        &server,
        &["--known-servers", &path_arg(&file)],
        &login_script("amy"),
    );
    assert_eq!(code, Some(4), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("not known") && err.contains(&server.fingerprint()),
        "{err}"
    );
    assert!(!out.contains("logged in"), "{out}");
    assert!(!file.exists(), "a refused key must not be pinned");
    // The password never reached the server: no account was made.
    let mut c = server.connect();
    c.cmd_err("LOGIN amy pw-amy", "bad-credentials");
}

#[test]
fn accept_new_pins_then_the_pin_is_known_and_a_change_is_refused_naming_file_and_line() {
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cfg").join("known_servers");
    let ks = path_arg(&file);
    let (code, out, err) = run(
        &server,
        &["--known-servers", &ks, "--accept-new"],
        &login_script("bea"),
    );
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("logged in as bea"), "{out}");
    let pinned = std::fs::read_to_string(&file).unwrap();
    let key = format!("127.0.0.1:{}", server.tcp.port());
    assert_eq!(pinned, format!("{key} {}\n", server.fingerprint()));
    // Known now: no flag needed.
    let (code, out, err) = run(&server, &["--known-servers", &ks], "/login bea pw-bea\n");
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("logged in as bea"), "{out}");
    // Another key for this host:port on line 3: refused even with --accept-new.
    let other = format!("sha256:{}", "ab".repeat(32));
    std::fs::write(
        &file,
        format!("# pins\n127.0.0.1:1 {other}\n{key} {other}\n"),
    )
    .unwrap();
    for flags in [
        vec!["--known-servers", &ks],
        vec!["--known-servers", &ks, "--accept-new"],
    ] {
        let (code, out, err) = run(&server, &flags, "/login bea pw-bea\n");
        assert_eq!(code, Some(4), "{flags:?}\nstdout:\n{out}\nstderr:\n{err}");
        assert!(
            err.contains(&format!("{ks}:3")),
            "must name file:line: {err}"
        );
        assert!(
            err.contains("CHANGED") && err.contains(&server.fingerprint()),
            "{err}"
        );
        assert!(!out.contains("logged in"), "{out}");
    }
}

#[test]
fn the_default_file_is_under_xdg_config_home() {
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Client::command_bare(&server)
        .args(["--listen-addr", "127.0.0.1", "--accept-new"])
        .env("XDG_CONFIG_HOME", tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(login_script("cid").as_bytes()).unwrap();
    }
    let status = wait_exit_or_kill(&mut child, Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let pinned = std::fs::read_to_string(tmp.path().join("peerline/known_servers")).unwrap();
    assert!(pinned.contains(&server.fingerprint()), "{pinned}");
}

#[test]
fn fingerprint_flag_trusts_exactly_that_key() {
    let server = Server::start(&[]);
    let fp = server.fingerprint();
    let (code, out, err) = run(&server, &["--fingerprint", &fp], &login_script("dan"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("logged in as dan"), "{out}");
    let wrong = format!("sha256:{}", "cd".repeat(32));
    let (code, out, err) = run(&server, &["--fingerprint", &wrong], "/login dan pw-dan\n");
    assert_eq!(code, Some(4), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&fp) && err.contains(&wrong), "{err}");
    // A malformed fingerprint is a usage error.
    let (code, _, err) = run(&server, &["--fingerprint", "sha256:abc"], "");
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn plaintext_flag_speaks_plain_lines_on_loopback() {
    let server = Server::start(&[]);
    let (code, out, err) = run(&server, &["--plaintext"], &login_script("eve"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("logged in as eve"), "{out}");
    let (code, _, err) = run(&server, &["--plaintext", "--accept-new"], "");
    assert_eq!(
        code,
        Some(2),
        "--plaintext with pinning flags is a usage error: {err}"
    );
}

#[test]
fn ca_flag_verifies_a_ca_issued_certificate_by_host_name() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let tmp = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let ca_params = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let ca = ca_params().self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let w = |name: &str, text: String| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        path_arg(&p)
    };
    let ca_pem = w("ca.pem", ca.pem());
    let cert_pem = w("cert.pem", cert.pem());
    let key_pem = w("key.pem", key.serialize_pem());
    let other_ca_key = KeyPair::generate().unwrap();
    let other_ca = ca_params().self_signed(&other_ca_key).unwrap();
    let other_pem = w("other.pem", other_ca.pem());
    let server = Server::start(&["--tls-cert", &cert_pem, "--tls-key", &key_pem]);
    let port = server.tcp.port().to_string();
    let client = |host: &str, ca: &str, script: &str| {
        let mut cmd = Command::new(super::harness::CLIENT_BIN);
        cmd.args([host, &port]);
        run_cmd(&mut cmd, &["--ca", ca], script)
    };
    let (code, out, err) = client("localhost", &ca_pem, &login_script("fay"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("logged in as fay"), "{out}");
    // Another CA, or a name the certificate does not carry: refused, exit 4.
    let (code, _, err) = client("localhost", &other_pem, "/login fay pw-fay\n");
    assert_eq!(code, Some(4), "{err}");
    let (code, _, err) = client("127.0.0.1", &ca_pem, "/login fay pw-fay\n");
    assert_eq!(code, Some(4), "{err}");
}
