//! Issue 2: fetching over ssh:// (a real sshd on 127.0.0.1, `auth.ssh_key`) and https:// (git
//! http-backend behind TLS with a test CA, `auth.token_file`).

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawning");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn fleet() -> Fleet {
    let f = Fleet::new();
    f.write("hosts/h1/files/etc/motd", "over the wire\n");
    f.commit("one");
    f
}

#[test]
fn fetch_over_ssh_with_a_deploy_key() {
    let sshd = Path::new("/usr/sbin/sshd");
    assert!(
        sshd.exists(),
        "openssh-server is needed (scripts/test.sh installs it)"
    );
    let f = fleet();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("host_key")));
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("deploy_key")));
    std::fs::copy(d.join("deploy_key.pub"), d.join("authorized_keys")).unwrap();
    let port = free_port();
    let git_path = Path::new(&git(Path::new("/"), &["--exec-path"]))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("bin");
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n\
             SetEnv PATH={gp}:/usr/local/bin:/usr/bin:/bin\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display(),
            gp = git_path.display(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let _server = Server(
        Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("sshd to listen", Duration::from_secs(20), || {
        port_open(port)
    });

    let url = format!("ssh://root@127.0.0.1:{port}{}", f.bare().display());
    let key = d.join("deploy_key");
    let h = Host::new(
        "h1",
        &url,
        &format!("[auth]\nssh_key = \"{}\"", key.display()),
    );
    h.apply_expect(0);
    assert_eq!(h.read("/etc/motd").unwrap(), "over the wire\n");
    // The report is pushed to the status branch with the same key and pinned host key.
    let pushed = git(&f.bare(), &["show", "refs/heads/status/h1:status.toml"]);
    assert!(pushed.contains("host = \"h1\""), "{pushed}");
    let known = std::fs::read_to_string(h.state().join("known_hosts")).unwrap();
    assert!(
        known.contains("ssh-ed25519"),
        "host key pinned on first use: {known}"
    );

    // A key the server does not know: the fetch fails, the host keeps what it has, the status says why.
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("other_key")));
    h.configure(
        &url,
        &format!("[auth]\nssh_key = \"{}\"", d.join("other_key").display()),
    );
    h.apply_expect(0);
    let st = h.status();
    assert!(
        st["message"].as_str().unwrap().contains("could not fetch"),
        "{st:?}"
    );
    assert_eq!(h.read("/etc/motd").unwrap(), "over the wire\n");
}

/// git http-backend as CGI behind TLS, requiring HTTP basic auth with the token as password.
const HTTPS_SERVER: &str = r#"
import base64, http.server, os, ssl, subprocess, sys
root, port, cert, key, token, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
class H(http.server.BaseHTTPRequestHandler):
    def handle_one(self):
        with open(log, "a") as f: f.write(self.command + " " + self.path + "\n")
        # A password on any command line (git push, git-remote-https) is world-readable: log it.
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == os.getpid(): continue
            try: c = open("/proc/%s/cmdline" % p, "rb").read()
            except OSError: continue
            if token.encode() in c:
                with open(log, "a") as f: f.write("LEAK " + c.replace(b"\0", b" ").decode("utf-8", "replace") + "\n")
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic ") or base64.b64decode(auth[6:]).decode().split(":", 1)[-1] != token:
            self.send_response(401); self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0"); self.end_headers(); return
        path, _, query = self.path.partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1", PATH_INFO=path,
                   QUERY_STRING=query, REQUEST_METHOD=self.command, REMOTE_USER="plumb",
                   CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   GIT_PROTOCOL=self.headers.get("Git-Protocol", ""))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        env["CONTENT_LENGTH"] = str(len(body))
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(":")
            if k.lower() == "status": status = int(v.strip().split()[0])
            elif k: headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload))); self.end_headers()
        self.wfile.write(payload)
    do_GET = do_POST = handle_one
    def log_message(self, *a): pass
httpd = http.server.HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
"#;

#[test]
fn fetch_over_https_with_a_token() {
    let f = fleet();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // A test CA and a server certificate it signs (rustls refuses a CA certificate as the server's).
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509", "-days", "2", "-subj", "/CN=plumb test CA"])
        .args(ec)
        .arg("-keyout")
        .arg(d.join("ca.key"))
        .arg("-out")
        .arg(d.join("ca.pem")));
    run(Command::new("openssl")
        .args(["req", "-subj", "/CN=127.0.0.1"])
        .args(ec)
        .arg("-keyout")
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("req.pem")));
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(d.join("req.pem"))
        .arg("-CA")
        .arg(d.join("ca.pem"))
        .arg("-CAkey")
        .arg(d.join("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(d.join("ext.cnf"))
        .arg("-out")
        .arg(d.join("cert.pem")));
    std::fs::write(d.join("server.py"), HTTPS_SERVER).unwrap();
    std::fs::write(d.join("token"), "s3cret-token\n").unwrap();
    let port = free_port();
    let _server = Server(
        Command::new("python3")
            .arg(d.join("server.py"))
            .arg(f.dir.path())
            .arg(port.to_string())
            .arg(d.join("cert.pem"))
            .arg(d.join("key.pem"))
            .arg("s3cret-token")
            .arg(d.join("requests.log"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the https server to listen",
        Duration::from_secs(20),
        || port_open(port),
    );

    let url = format!("https://127.0.0.1:{port}/fleet.git");
    let auth = format!("[auth]\ntoken_file = \"{}\"", d.join("token").display());
    let h = Host::new("h1", &url, &auth);
    let apply = |h: &Host| {
        Command::new(PLUMB)
            .args(["apply", "--config"])
            .arg(h.config())
            .env("SSL_CERT_FILE", d.join("ca.pem"))
            .env("PLUMB_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = apply(&h);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(h.read("/etc/motd").unwrap(), "over the wire\n");
    // The report is pushed to the status branch with the same token (git binary, same CA).
    let pushed = git(&f.bare(), &["show", "refs/heads/status/h1:status.toml"]);
    assert!(pushed.contains("host = \"h1\""), "{pushed}");

    // A poll that finds nothing new is one POST of `ls-refs` (no capability GET before it).
    std::fs::write(d.join("requests.log"), "").unwrap();
    let out = apply(&h);
    assert!(out.status.success());
    let log = std::fs::read_to_string(d.join("requests.log")).unwrap();
    let fetches: Vec<&str> = log.lines().filter(|l| l.contains("upload-pack")).collect();
    assert_eq!(fetches, ["POST /fleet.git/git-upload-pack"], "{log}");

    // A new commit is fetched (the probe sees it moved, gix fetches it).
    f.write("hosts/h1/files/etc/motd", "moved on\n");
    f.commit("two");
    let out = apply(&h);
    assert!(out.status.success());
    assert_eq!(h.read("/etc/motd").unwrap(), "moved on\n");

    // Issue 12: a password in the URL (no token_file) is used for the status push, and is on no
    // command line of git push or git-remote-https (the server looks at every process's argv).
    h.configure(
        &format!("https://plumb:s3cret-token@127.0.0.1:{port}/fleet.git"),
        "",
    );
    std::fs::write(d.join("requests.log"), "").unwrap();
    f.write("hosts/h1/files/etc/motd", "password in the URL\n");
    f.commit("three");
    let out = apply(&h);
    let log = std::fs::read_to_string(d.join("requests.log")).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("git-receive-pack"), "no push: {log}");
    assert!(!log.contains("LEAK"), "{log}");
    h.configure(&url, &auth);

    // A wrong token is refused; the secret never shows in the output or the status.
    std::fs::write(d.join("token"), "wrong-token\n").unwrap();
    let out = apply(&h);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let st = h.status();
    assert!(
        st["message"].as_str().unwrap().contains("could not fetch"),
        "{st:?}"
    );
    let status_text = std::fs::read_to_string(h.state().join("report.toml")).unwrap()
        + &std::fs::read_to_string(h.state().join("status-push.json")).unwrap();
    for secret in ["wrong-token", "s3cret-token"] {
        assert!(
            !text.contains(secret) && !status_text.contains(secret),
            "token leaked"
        );
    }

    // Without the test CA the server's certificate is not trusted.
    std::fs::write(d.join("token"), "s3cret-token\n").unwrap();
    let out = Command::new(PLUMB)
        .args(["apply", "--config"])
        .arg(h.config())
        .output()
        .unwrap();
    assert!(out.status.success());
    let st = h.status();
    assert!(
        st["message"].as_str().unwrap().contains("could not fetch"),
        "untrusted cert must fail: {st:?}"
    );

    // A pack holding an object over the allocation limit (16 MiB; here another host's file) is
    // fetched again by `git fetch`, with the token in its environment and the same CA.
    f.write_bytes("hosts/h2/files/var/big", &vec![0u8; 20 << 20]);
    f.write("hosts/h1/files/etc/motd", "after the big one\n");
    let big = f.commit("big");
    let out = apply(&h);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(h.read("/etc/motd").unwrap(), "after the big one\n");
    assert_eq!(h.status()["applied_commit"].as_str(), Some(big.as_str()));
}
