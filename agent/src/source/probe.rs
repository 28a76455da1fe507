//! The poll that finds nothing new, in one round trip: the protocol v2 `ls-refs` for the one
//! branch is sent together with the connection request, instead of after the server's capability
//! advertisement as gix does (two round trips), over git:// and https:// (and file://). Only "is the tip still the one we have?" is asked
//! here; a new tip is fetched by gix. Any error sends the caller down the ordinary fetch path.

use super::git::{read_token, Remote};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use gix::bstr::{BString, ByteSlice};
use gix::protocol::transport::packetline::blocking_io::{encode, StreamingPeekableIter};
use gix::protocol::transport::packetline::PacketLineRef;
use gix::url::Scheme;
use gix::ObjectId;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server says of one ref.
#[derive(Debug, PartialEq, Eq)]
pub enum Tip {
    At(ObjectId),
    Missing,
}

/// Asks the server at `remote.url` where `full_ref` (e.g. `refs/heads/main`) points.
pub fn remote_tip(remote: &Remote, full_ref: &str) -> Result<Tip> {
    let url = gix::url::parse(super::git::remote_url(&remote.url)?.as_bytes().as_bstr())
        .context("parsing the repository URL")?;
    let command = ls_refs_command(full_ref)?;
    let listing = match &url.scheme {
        Scheme::Git => over_daemon(&url, &command)?,
        // Not over ssh: sshd often drops GIT_PROTOCOL (Debian's default AcceptEnv does), and a v0
        // server would take the early command for a broken request. gix's two exchanges cost
        // little next to the ssh handshake anyway.
        Scheme::File => over_process(local_upload_pack(&url)?, &command)?,
        Scheme::Http | Scheme::Https => over_http(remote, &command)?,
        other => bail!("no single-round-trip probe for {} URLs", other.as_str()),
    };
    Ok(find_ref(&listing, full_ref))
}

/// `ls-refs` for refs starting with `full_ref` (the server matches prefixes; the exact name is
/// picked from the answer), ending with a flush.
fn ls_refs_command(full_ref: &str) -> Result<Vec<u8>> {
    if full_ref.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        bail!("ref name {full_ref:?} has spaces or control characters");
    }
    let mut out = Vec::new();
    encode::data_to_write(b"command=ls-refs\n", &mut out)?;
    encode::delim_to_write(&mut out)?;
    encode::data_to_write(format!("ref-prefix {full_ref}\n").as_bytes(), &mut out)?;
    encode::flush_to_write(&mut out)?;
    Ok(out)
}

/// The (oid, name) pairs of an `ls-refs` answer.
type Listing = Vec<(ObjectId, BString)>;

fn find_ref(listing: &Listing, full_ref: &str) -> Tip {
    listing
        .iter()
        .find(|(_, name)| name == full_ref)
        .map_or(Tip::Missing, |(id, _)| Tip::At(*id))
}

/// git://: the daemon request and the command in one write, on a socket without Nagle's delay
/// (small writes otherwise wait for the server's delayed ACK, ~40 ms).
fn over_daemon(url: &gix::Url, command: &[u8]) -> Result<Listing> {
    let host = url.host().context("git:// URL without a host")?;
    let port = url.port_or_default().unwrap_or(9418);
    let mut stream = connect_tcp(host, port)?;
    let path = url.path.to_str().context("repository path is not UTF-8")?;
    let vhost = match url.port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut request = Vec::new();
    encode::data_to_write(
        format!("git-upload-pack {path}\0host={vhost}\0\0version=2\0").as_bytes(),
        &mut request,
    )?;
    request.extend_from_slice(command);
    stream
        .write_all(&request)
        .context("sending the ref request")?;
    read_v2_listing(stream)
}

/// A TCP connection to a git daemon, with timeouts and TCP_NODELAY; gix's git:// transport is
/// built on it too.
pub fn connect_tcp(host: &str, port: u16) -> Result<TcpStream> {
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))?;
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {host}:{port}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// A local repository: git-upload-pack as a child process.
fn local_upload_pack(url: &gix::Url) -> Result<Command> {
    let path = url.path.to_path().context("repository path is not valid")?;
    let mut cmd = Command::new("git-upload-pack");
    cmd.arg("--").arg(path).env("GIT_PROTOCOL", "version=2");
    Ok(cmd)
}

/// Runs `cmd`, writes the whole command to it at once, and reads the answer.
fn over_process(mut cmd: Command, command: &[u8]) -> Result<Listing> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    // The request is a few dozen bytes: it fits the pipe, so writing before reading cannot block.
    let written = stdin.write_all(command);
    drop(stdin); // EOF: the server ends after this one command
    let listing = written
        .context("sending the ref request")
        .and_then(|_| read_v2_listing(stdout));
    if listing.is_err() {
        let _ = child.kill();
    }
    let output = child.wait_with_output()?;
    match listing {
        Ok(l) => Ok(l),
        Err(e) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(e.context(format!("{program}: {}", stderr.trim())))
        }
    }
}

/// Reads a v2 capability advertisement, then the `ls-refs` answer that follows it.
fn read_v2_listing(read: impl Read) -> Result<Listing> {
    let mut lines = StreamingPeekableIter::new(read, &[PacketLineRef::Flush], false);
    lines.fail_on_err_lines(true);
    let mut first = true;
    let mut has_ls_refs = false;
    while let Some(line) = lines.read_line() {
        let line = line??;
        let text = line.as_bstr().map(|l| l.trim_end()).unwrap_or_default();
        if first && text != b"version 2" {
            bail!("the server did not answer in protocol v2");
        }
        first = false;
        has_ls_refs |= text == b"ls-refs" || text.starts_with(b"ls-refs=");
    }
    check_stop(&lines)?;
    if !has_ls_refs {
        bail!("the server does not offer ls-refs");
    }
    lines.reset();
    read_listing(&mut lines)
}

/// The lines `<oid> <name>[ attributes]` up to the flush.
fn read_listing<R: Read>(lines: &mut StreamingPeekableIter<R>) -> Result<Listing> {
    let mut out = Vec::new();
    while let Some(line) = lines.read_line() {
        let line = line??;
        let text = line.as_bstr().map(|l| l.trim_end()).unwrap_or_default();
        let mut words = text.split_str(" ");
        let (Some(oid), Some(name)) = (words.next(), words.next()) else {
            bail!("malformed ls-refs line {:?}", text.as_bstr());
        };
        let oid = ObjectId::from_hex(oid)
            .with_context(|| format!("malformed object id in {:?}", text.as_bstr()))?;
        out.push((oid, name.into()));
    }
    check_stop(lines)?;
    Ok(out)
}

/// A section must end with a flush packet; EOF or an ERR line before it is an error.
fn check_stop<R: Read>(lines: &StreamingPeekableIter<R>) -> Result<()> {
    match lines.stopped_at() {
        Some(PacketLineRef::Flush) => Ok(()),
        _ => bail!("the server closed the connection mid-answer"),
    }
}

/// https:// and http://: one POST carrying the command (stateless protocol v2 needs no
/// capability request first), on the process's HTTP agent.
fn over_http(remote: &Remote, command: &[u8]) -> Result<Listing> {
    let endpoint = format!("{}/git-upload-pack", remote.url.trim_end_matches('/'));
    let mut req = super::http::agent()
        .post(&endpoint)
        .header("Content-Type", "application/x-git-upload-pack-request")
        .header("Accept", "application/x-git-upload-pack-result")
        .header("Git-Protocol", "version=2");
    if let Some(file) = &remote.token_file {
        let user = gix::url::parse(remote.url.as_bytes().as_bstr())
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_else(|| "plumb".into());
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{}", read_token(file)?));
        req = req.header("Authorization", format!("Basic {basic}"));
    }
    // A redirect is left to the fetch, which reports it.
    let resp = req.send(command).map_err(|e| anyhow!("{e}"))?;
    if !resp.status().is_success() {
        bail!("the server answered HTTP {}", resp.status());
    }
    let body = resp.into_body().into_reader();
    let mut lines = StreamingPeekableIter::new(body, &[PacketLineRef::Flush], false);
    lines.fail_on_err_lines(true);
    read_listing(&mut lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Listing> {
        read_v2_listing(bytes)
    }

    const OID: &str = "039a64e73cfc36a9b0d99e68fba2256af2d25864";

    fn answer(caps: &[&str], refs: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in caps {
            encode::data_to_write(format!("{c}\n").as_bytes(), &mut out).unwrap();
        }
        encode::flush_to_write(&mut out).unwrap();
        for r in refs {
            encode::data_to_write(format!("{r}\n").as_bytes(), &mut out).unwrap();
        }
        encode::flush_to_write(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_the_exact_ref_among_prefix_matches() {
        let a = answer(
            &[
                "version 2",
                "agent=git/2.47",
                "ls-refs=unborn",
                "fetch=shallow",
            ],
            &[
                &format!("{} refs/heads/main-old", "1".repeat(40)),
                &format!("{OID} refs/heads/main"),
            ],
        );
        let listing = parse(&a).unwrap();
        assert_eq!(
            find_ref(&listing, "refs/heads/main"),
            Tip::At(ObjectId::from_hex(OID.as_bytes()).unwrap())
        );
        assert_eq!(find_ref(&listing, "refs/heads/mai"), Tip::Missing);
    }

    #[test]
    fn empty_listing_is_missing() {
        let a = answer(&["version 2", "ls-refs"], &[]);
        assert_eq!(
            find_ref(&parse(&a).unwrap(), "refs/heads/main"),
            Tip::Missing
        );
    }

    #[test]
    fn rejects_v0_truncated_and_err() {
        let mut v0 = Vec::new();
        encode::data_to_write(format!("{OID} HEAD\0multi_ack\n").as_bytes(), &mut v0).unwrap();
        assert!(parse(&v0).unwrap_err().to_string().contains("protocol v2"));

        let full = answer(
            &["version 2", "ls-refs"],
            &[&format!("{OID} refs/heads/main")],
        );
        let cut = &full[..full.len() - 4];
        assert!(parse(cut).is_err());

        let mut err = Vec::new();
        encode::error_to_write(b"access denied", &mut err).unwrap();
        assert!(parse(&err).is_err());
    }

    #[test]
    fn command_is_one_ls_refs_request() {
        let c = ls_refs_command("refs/heads/main").unwrap();
        assert_eq!(
            c,
            b"0014command=ls-refs\n0001001fref-prefix refs/heads/main\n0000".to_vec()
        );
        assert!(ls_refs_command("refs/heads/a b").is_err());
    }
}
