//! The one HTTP client of the process: ureq over rustls (ring), for the one-round-trip probe and,
//! through gix's blocking [`Http`] trait, for gix's https fetch. One agent, so the probe's
//! connection is reused by the fetch that may follow it.
//!
//! Redirects are not followed (a moved repository is an error naming the new place, to put in
//! agent.toml), and the server's certificate is checked against the system's roots
//! (`SSL_CERT_FILE` honoured), as git does.

use gix::bstr::BString;
use gix_transport::client::blocking_io::http::{
    GetResponse, Http, PostBodyDataKind, PostResponse, Transport,
};
use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a response to start; the body of a big pack may take longer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The process's HTTP agent.
pub fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        super::git::init_tls();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .build()
            .into()
    })
}

/// gix's HTTP transport for `url`, on [`agent`].
pub fn transport(url: gix::Url) -> Transport<Ureq> {
    Transport::new_http(Ureq, url, gix::protocol::transport::Protocol::V2, false)
}

/// A response, or why there is none; `Err` for statuses gix must see as an I/O error (401 asks
/// for credentials).
type Answer = std::result::Result<(Vec<u8>, Body), std::io::Error>;

/// The body of a response.
pub type Body = Box<dyn BufRead + Send>;

/// Sends one request; the answer's headers are `name: value` lines, as gix reads them.
fn send(method: &str, url: &str, headers: &[String], body: Option<&[u8]>) -> Answer {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for h in headers {
        if let Some((name, value)) = h.split_once(':') {
            req = req.header(name.trim(), value.trim());
        }
    }
    let result = match body {
        Some(b) => req
            .body(b.to_vec())
            .map_err(std::io::Error::other)
            .and_then(|r| agent().run(r).map_err(io_error)),
        None => req
            .body(())
            .map_err(std::io::Error::other)
            .and_then(|r| agent().run(r).map_err(io_error)),
    };
    let resp = result?;
    let status = resp.status();
    let mut head = Vec::new();
    for (name, value) in resp.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.push(b'\n');
    }
    if status.is_success() {
        let body = BufReader::new(resp.into_body().into_reader());
        return Ok((head, Box::new(body)));
    }
    Err(status_error(status, &resp))
}

fn io_error(e: ureq::Error) -> std::io::Error {
    let kind = match &e {
        ureq::Error::Timeout(_) => std::io::ErrorKind::TimedOut,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            std::io::ErrorKind::ConnectionRefused
        }
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, e)
}

/// The error for a status other than 2xx: 401 carries the server's challenges so gix asks the
/// credential helper (`auth.token_file`); a redirect names its target.
fn status_error<B>(
    status: ureq::http::StatusCode,
    resp: &ureq::http::Response<B>,
) -> std::io::Error {
    let header = |name| {
        resp.headers()
            .get_all(name)
            .iter()
            .map(|v| BString::from(v.as_bytes()))
            .collect::<Vec<_>>()
    };
    if status == ureq::http::StatusCode::UNAUTHORIZED {
        return std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            gix_transport::client::AuthenticationRequired {
                www_authenticate: header("www-authenticate"),
            },
        );
    }
    if status.is_redirection() {
        let to = header("location")
            .first()
            .map(|l| l.to_string())
            .unwrap_or_default();
        return std::io::Error::other(format!(
            "the server redirects (HTTP {}) to {to:?}: plumb does not follow redirects; put the new URL in agent.toml",
            status.as_u16()
        ));
    }
    let kind = if status.is_server_error() {
        std::io::ErrorKind::ConnectionAborted
    } else {
        std::io::ErrorKind::Other
    };
    std::io::Error::new(kind, format!("the server answered HTTP {status}"))
}

/// gix's [`Http`] on ureq. A POST's body is what gix writes before it reads the answer; it is
/// sent when the answer is first read (gix's fetch requests are a few lines of wants and haves).
pub struct Ureq;

/// A request whose body is being written, or its answer.
enum Exchange {
    Writing {
        url: String,
        headers: Vec<String>,
        body: Vec<u8>,
    },
    Answered {
        headers: Option<Vec<u8>>,
        body: Option<Body>,
    },
    Failed(Option<std::io::Error>),
}

type Shared = Arc<Mutex<Exchange>>;

impl Exchange {
    /// Sends the request if not done yet.
    fn answer(&mut self) {
        if let Exchange::Writing { url, headers, body } = self {
            *self = match send("POST", url, headers, Some(body)) {
                Ok((h, b)) => Exchange::Answered {
                    headers: Some(h),
                    body: Some(b),
                },
                Err(e) => Exchange::Failed(Some(e)),
            };
        }
    }

    fn failure(&mut self) -> std::io::Error {
        match self {
            Exchange::Failed(e) => e
                .take()
                .unwrap_or_else(|| std::io::Error::other("the HTTP request failed")),
            _ => std::io::Error::other("the HTTP response was already read"),
        }
    }
}

/// What gix writes a POST's body into.
pub struct PostBody(Shared);

impl Write for PostBody {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut *lock(&self.0) {
            Exchange::Writing { body, .. } => {
                body.extend_from_slice(buf);
                Ok(buf.len())
            }
            _ => Err(std::io::Error::other("the HTTP request was already sent")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Exchange> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A response part (headers or body) for gix.
pub struct Part(State);

/// Ready, or read from the exchange (sending it) on first use.
enum State {
    Ready(Cursor<Vec<u8>>),
    Failed(Option<std::io::Error>),
    Headers(Shared),
    Body(Shared),
    Open(Body),
}

impl State {
    fn open(&mut self) -> std::io::Result<()> {
        let next = match self {
            State::Failed(e) => {
                return Err(e
                    .take()
                    .unwrap_or_else(|| std::io::Error::other("the HTTP request failed")))
            }
            State::Headers(s) => {
                let mut x = lock(s);
                x.answer();
                match &mut *x {
                    Exchange::Answered { headers, .. } => {
                        State::Ready(Cursor::new(headers.take().unwrap_or_default()))
                    }
                    other => return Err(other.failure()),
                }
            }
            State::Body(s) => {
                let mut x = lock(s);
                x.answer();
                match &mut *x {
                    Exchange::Answered { body, .. } => match body.take() {
                        Some(b) => State::Open(b),
                        None => State::Ready(Cursor::new(Vec::new())),
                    },
                    other => return Err(other.failure()),
                }
            }
            State::Ready(_) | State::Open(_) => return Ok(()),
        };
        *self = next;
        Ok(())
    }
}

impl Read for Part {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.open()?;
        match &mut self.0 {
            State::Ready(c) => c.read(buf),
            State::Open(b) => b.read(buf),
            _ => unreachable!("opened above"),
        }
    }
}

impl BufRead for Part {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.0.open()?;
        match &mut self.0 {
            State::Ready(c) => c.fill_buf(),
            State::Open(b) => b.fill_buf(),
            _ => unreachable!("opened above"),
        }
    }
    fn consume(&mut self, amt: usize) {
        match &mut self.0 {
            State::Ready(c) => c.consume(amt),
            State::Open(b) => b.consume(amt),
            _ => {}
        }
    }
}

fn headers_of(headers: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    headers
        .into_iter()
        .map(|h| h.as_ref().to_string())
        .collect()
}

impl Http for Ureq {
    type Headers = Part;
    type ResponseBody = Part;
    type PostBody = PostBody;

    fn get(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::error::Result<GetResponse<Part, Part>> {
        // Errors reach gix as I/O errors when it reads the headers: that is where it looks for
        // a 401 to ask for credentials.
        Ok(match send("GET", url, &headers_of(headers), None) {
            Ok((h, b)) => GetResponse {
                headers: Part(State::Ready(Cursor::new(h))),
                body: Part(State::Open(b)),
            },
            Err(e) => GetResponse {
                headers: Part(State::Failed(Some(e))),
                body: Part(State::Ready(Cursor::new(Vec::new()))),
            },
        })
    }

    fn post(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        _body: PostBodyDataKind,
    ) -> gix::error::Result<PostResponse<Part, Part, PostBody>> {
        let shared: Shared = Arc::new(Mutex::new(Exchange::Writing {
            url: url.to_string(),
            headers: headers_of(headers),
            body: Vec::new(),
        }));
        Ok(PostResponse {
            post_body: PostBody(shared.clone()),
            headers: Part(State::Headers(shared.clone())),
            body: Part(State::Body(shared)),
        })
    }

    fn configure(&mut self, _config: &dyn std::any::Any) -> gix::error::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-request HTTP server on loopback: answers `response` and hands back the request.
    fn serve_once(response: &'static str) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body by Content-Length.
            loop {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
            }
            s.write_all(response.as_bytes()).unwrap();
            req
        });
        (url, handle)
    }

    #[test]
    fn post_is_sent_when_its_answer_is_read() {
        let (url, server) = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-result\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
        let mut http = Ureq;
        let mut r = http
            .post(
                &format!("{url}/git-upload-pack"),
                &url,
                ["Git-Protocol: version=2"],
                PostBodyDataKind::BoundedAndFitsIntoMemory,
            )
            .unwrap();
        r.post_body.write_all(b"0000").unwrap();
        let mut headers = String::new();
        r.headers.read_to_string(&mut headers).unwrap();
        assert!(
            headers.contains("content-type: application/x-git-upload-pack-result"),
            "{headers}"
        );
        let mut body = String::new();
        r.body.read_to_string(&mut body).unwrap();
        assert_eq!(body, "hello");
        let req = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(
            req.starts_with("POST /git-upload-pack HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase().contains("git-protocol: version=2"),
            "{req}"
        );
        assert!(req.ends_with("\r\n\r\n0000"), "{req}");
    }

    #[test]
    fn unauthorized_asks_gix_for_credentials() {
        let (url, server) = serve_once(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let r = Ureq
            .get(&format!("{url}/info/refs"), &url, ["Accept: */*"])
            .unwrap();
        let mut headers = r.headers;
        let e = headers.fill_buf().map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        let auth = e
            .get_ref()
            .and_then(|e| e.downcast_ref::<gix_transport::client::AuthenticationRequired>())
            .expect("AuthenticationRequired");
        assert_eq!(
            auth.www_authenticate,
            [BString::from("Basic realm=\"git\"")]
        );
        server.join().unwrap();
    }

    #[test]
    fn redirects_are_not_followed_and_named() {
        let (url, server) = serve_once(
            "HTTP/1.1 301 Moved\r\nLocation: https://elsewhere.invalid/x.git/info/refs\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let r = Ureq
            .get(&format!("{url}/info/refs"), &url, ["Accept: */*"])
            .unwrap();
        let mut headers = r.headers;
        let e = headers.fill_buf().map(|_| ()).unwrap_err();
        assert!(
            e.to_string()
                .contains("redirects (HTTP 301) to \"https://elsewhere.invalid/x.git/info/refs\""),
            "{e}"
        );
        server.join().unwrap();
    }
}
