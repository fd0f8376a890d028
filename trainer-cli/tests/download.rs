//! Offline tests of the data set download: a tiny HTTP server on 127.0.0.1
//! serves archives that the tests build themselves.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest, Sha256};
use trainer_cli::download::{
    download_and_extract, ensure_dataset, Algorithm, DownloadError, Options, Source,
    ARCHIVE_FOLDER, EXPECTED_FILES,
};

// ---------------------------------------------------------------------------
// Test archives
// ---------------------------------------------------------------------------

/// Small stand-in content for one data set file.
fn content(name: &str) -> Vec<u8> {
    let mut bytes = format!("contents of {name}\n").into_bytes();
    bytes.extend((0..=255u8).cycle().take(3000)); // some binary data too
    bytes
}

/// How to write one tar entry.
enum Entry<'a> {
    File(&'a str, Vec<u8>),
    Dir(&'a str),
    /// A file whose name is written raw into the header, bypassing the tar
    /// crate's own path checks (to forge hostile archives).
    RawFile(&'a str, Vec<u8>),
    Symlink(&'a str, &'a str),
}

/// Builds a `.tar.gz` in memory.
fn targz(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        match entry {
            Entry::File(path, data) => {
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, &data[..]).unwrap();
            }
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            Entry::RawFile(path, data) => {
                header.set_size(data.len() as u64);
                let name = &mut header.as_gnu_mut().unwrap().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_cksum();
                builder.append(&header, &data[..]).unwrap();
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// The entries of a complete data set folder (plus a readme), named as in
/// the official archive.
fn dataset_entries() -> Vec<Entry<'static>> {
    let mut entries = vec![Entry::Dir("cifar-10-batches-bin/")];
    for name in EXPECTED_FILES {
        let path: &'static str = Box::leak(format!("{ARCHIVE_FOLDER}/{name}").into_boxed_str());
        entries.push(Entry::File(path, content(name)));
    }
    entries.push(Entry::File(
        "cifar-10-batches-bin/readme.html",
        b"<p>readme</p>".to_vec(),
    ));
    entries
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A source describing `archive`, served at `url`.
fn source_for(url: &str, archive: &[u8]) -> Source {
    Source {
        url: url.to_owned(),
        size: archive.len() as u64,
        md5: hex(&Md5::digest(archive)),
        sha256: hex(&Sha256::digest(archive)),
    }
}

fn quiet(timeout: Duration) -> Options {
    Options {
        timeout,
        progress: false,
    }
}

// ---------------------------------------------------------------------------
// Test server
// ---------------------------------------------------------------------------

/// What the server does with one connection.
#[derive(Clone)]
enum Reply {
    /// `200 OK` with `Content-Length` and the body, plus extra header lines.
    Ok(Vec<u8>, &'static str),
    /// `200 OK` without `Content-Length`: the body ends when the connection closes.
    CloseDelimited(Vec<u8>),
    /// An error status with a short body.
    Status(u16),
    /// Announces the full length but sends only the first `usize` bytes, then closes.
    Truncated(Vec<u8>, usize),
    /// Reads the request and never answers (until released or 10 s pass).
    Silent,
    /// Reads the request and closes the connection without a word.
    HangUp,
}

/// A server on 127.0.0.1 answering one connection per `Reply`, then exiting.
struct Server {
    url: String,
    release: Sender<()>,
    handle: JoinHandle<usize>,
}

impl Server {
    fn start(replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/cifar-10-binary.tar.gz",
            listener.local_addr().unwrap()
        );
        let (release, released) = mpsc::channel();
        let handle = thread::spawn(move || run_server(listener, replies, released));
        Server {
            url,
            release,
            handle,
        }
    }

    /// Releases silent connections, waits for the server to exit and returns
    /// how many connections it answered.
    fn finish(self) -> usize {
        let _ = self.release.send(());
        self.handle.join().unwrap()
    }
}

fn run_server(listener: TcpListener, replies: Vec<Reply>, released: Receiver<()>) -> usize {
    listener.set_nonblocking(true).unwrap();
    let mut served = 0;
    for reply in replies {
        let Some(mut stream) = accept_within(&listener, Duration::from_secs(10)) else {
            break;
        };
        if read_request(&mut stream).is_err() {
            continue;
        }
        served += 1;
        answer(&mut stream, &reply, &released);
    }
    served
}

fn accept_within(listener: &TcpListener, limit: Duration) -> Option<TcpStream> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).ok()?;
                return Some(stream);
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

/// Reads up to the end of the request headers.
fn read_request(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.push(byte[0]);
    }
    Ok(())
}

fn answer(stream: &mut TcpStream, reply: &Reply, released: &Receiver<()>) {
    // Write errors are ignored: the client may legitimately hang up early.
    let _ = match reply {
        Reply::Ok(body, extra) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                body.len()
            );
            stream
                .write_all(head.as_bytes())
                .and_then(|_| stream.write_all(body))
        }
        Reply::CloseDelimited(body) => stream
            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            .and_then(|_| stream.write_all(body)),
        Reply::Status(code) => stream.write_all(
            format!("HTTP/1.1 {code} Nope\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
                .as_bytes(),
        ),
        Reply::Truncated(body, sent) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream
                .write_all(head.as_bytes())
                .and_then(|_| stream.write_all(&body[..*sent]))
        }
        Reply::Silent => {
            let _ = released.recv_timeout(Duration::from_secs(10));
            Ok(())
        }
        Reply::HangUp => Ok(()),
    };
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

// ---------------------------------------------------------------------------
// Helpers for checking results
// ---------------------------------------------------------------------------

/// A scratch folder and the destination `ROOT/data/cifar-10-batches-bin`.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("data").join(ARCHIVE_FOLDER);
    (root, dest)
}

/// Names in `dir` (empty if it does not exist).
fn listing(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts a failed run left neither the destination nor temporary files.
fn assert_nothing_left(dest: &Path) {
    assert!(!dest.exists(), "{} must not exist", dest.display());
    let parent = dest.parent().unwrap();
    assert!(
        listing(parent).is_empty(),
        "leftovers: {:?}",
        listing(parent)
    );
}

/// Serves `archive` once and runs `ensure_dataset` against it.
fn fetch_once(
    archive: Vec<u8>,
    source_edit: impl FnOnce(&mut Source),
) -> (tempfile::TempDir, DownloadError) {
    let server = Server::start(vec![Reply::Ok(archive.clone(), "")]);
    let mut source = source_for(&server.url, &archive);
    source_edit(&mut source);
    let (root, dest) = scratch();
    let err = ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap_err();
    server.finish();
    assert_nothing_left(&dest);
    (root, err)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn official_source_has_published_values() {
    let s = Source::official();
    assert_eq!(
        s.url,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    );
    assert_eq!(s.size, 170_052_171);
    assert_eq!(s.md5, "c32a1d4ab5d03f1284b67883e8d87530");
    assert_eq!(
        s.sha256,
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
    );
}

#[test]
fn downloads_verifies_and_extracts() {
    let archive = targz(&dataset_entries());
    let server = Server::start(vec![Reply::Ok(archive.clone(), "")]);
    let source = source_for(&server.url, &archive);
    let (_root, dest) = scratch();

    let downloaded = ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap();

    assert!(downloaded);
    assert_eq!(server.finish(), 1);
    for name in EXPECTED_FILES {
        assert_eq!(
            std::fs::read(dest.join(name)).unwrap(),
            content(name),
            "{name}"
        );
    }
    assert!(dest.join("readme.html").is_file());
    // No temporary file or folder is left next to the destination.
    assert_eq!(listing(dest.parent().unwrap()), vec![ARCHIVE_FOLDER]);
}

#[test]
fn second_call_finds_the_data_without_network() {
    let archive = targz(&dataset_entries());
    let server = Server::start(vec![Reply::Ok(archive.clone(), "")]);
    let source = source_for(&server.url, &archive);
    let (_root, dest) = scratch();
    let opts = quiet(Duration::from_secs(5));
    assert!(ensure_dataset(&dest, &source, &opts).unwrap());
    // The server has exited: any network use now would fail.
    assert_eq!(server.finish(), 1);

    assert!(!ensure_dataset(&dest, &source, &opts).unwrap());
}

#[test]
fn progress_bar_can_be_on() {
    let archive = targz(&dataset_entries());
    let server = Server::start(vec![Reply::Ok(archive.clone(), "")]);
    let source = source_for(&server.url, &archive);
    let (_root, dest) = scratch();
    let opts = Options {
        timeout: Duration::from_secs(5),
        progress: true,
    };
    assert!(ensure_dataset(&dest, &source, &opts).unwrap());
    server.finish();
}

#[test]
fn md5_mismatch_is_rejected_and_leaves_nothing() {
    let archive = targz(&dataset_entries());
    let (_root, err) = fetch_once(archive, |s| s.md5 = "00".repeat(16));
    let DownloadError::ChecksumMismatch {
        algorithm,
        expected,
        got,
        ..
    } = &err
    else {
        panic!("wrong error: {err}");
    };
    assert_eq!(*algorithm, Algorithm::Md5);
    let message = err.to_string();
    assert!(message.contains("MD5 checksum mismatch"), "{message}");
    assert!(
        message.contains(&format!("expected {expected}, got {got}")),
        "{message}"
    );
    assert!(message.contains("127.0.0.1"), "{message}");
}

#[test]
fn sha256_mismatch_is_rejected_and_leaves_nothing() {
    let archive = targz(&dataset_entries());
    let (_root, err) = fetch_once(archive, |s| s.sha256 = "ab".repeat(32));
    assert!(
        matches!(
            err,
            DownloadError::ChecksumMismatch {
                algorithm: Algorithm::Sha256,
                ..
            }
        ),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains(&format!("expected {}", "ab".repeat(32))));
}

#[test]
fn checksums_are_case_insensitive() {
    let archive = targz(&dataset_entries());
    let server = Server::start(vec![Reply::Ok(archive.clone(), "")]);
    let mut source = source_for(&server.url, &archive);
    source.md5 = source.md5.to_uppercase();
    source.sha256 = source.sha256.to_uppercase();
    let (_root, dest) = scratch();
    assert!(ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap());
    server.finish();
}

#[test]
fn announced_size_mismatch_is_rejected() {
    let archive = targz(&dataset_entries());
    let len = archive.len() as u64;
    let (_root, err) = fetch_once(archive, |s| s.size += 10);
    match err {
        DownloadError::SizeMismatch { expected, got, .. } => {
            assert_eq!((expected, got), (len + 10, len));
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn oversized_body_without_length_is_rejected() {
    let archive = targz(&dataset_entries());
    let mut body = archive.clone();
    body.extend_from_slice(&[0; 5000]);
    let server = Server::start(vec![Reply::CloseDelimited(body)]);
    let source = source_for(&server.url, &archive);
    let (_root, dest) = scratch();
    let err = ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap_err();
    server.finish();
    assert!(
        matches!(err, DownloadError::SizeMismatch { got, .. } if got > source.size),
        "{err}"
    );
    assert!(err.to_string().contains("got more"), "{err}");
    assert_nothing_left(&dest);
}

#[test]
fn http_404_is_an_error() {
    let server = Server::start(vec![Reply::Status(404)]);
    let source = source_for(&server.url, b"whatever");
    let (_root, dest) = scratch();
    let err = ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap_err();
    server.finish();
    assert!(
        matches!(err, DownloadError::HttpStatus { status: 404, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&source.url) && message.contains("404"),
        "{message}"
    );
    assert_nothing_left(&dest);
}

/// No network: the message says how to get the data otherwise (unpack the
/// archive by hand where it belongs, --data, or a mirror with --url), and
/// the `data/` folder the download made is gone again.
#[test]
fn connection_refused_says_what_to_do() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // listener dropped: nothing listens on `port` any more
    let source = source_for(&format!("http://127.0.0.1:{port}/x.tar.gz"), b"x");
    let (_root, dest) = scratch();
    let err = ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap_err();
    assert!(matches!(err, DownloadError::Network { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&source.url), "{message}");
    let parent = dest.parent().unwrap();
    assert!(
        message.contains(&format!(
            "tar xzf cifar-10-binary.tar.gz -C {}",
            parent.display()
        )),
        "{message}"
    );
    assert!(
        message.contains("--data") && message.contains("--url (or CIFAR10_URL)"),
        "{message}"
    );
    assert!(!message.contains("--offline"), "{message}");
    assert_nothing_left(&dest);
    assert!(
        !parent.exists(),
        "the failed download left {} behind",
        parent.display()
    );
}

#[test]
fn silent_server_times_out() {
    let server = Server::start(vec![Reply::Silent]);
    let source = source_for(&server.url, b"never sent");
    let (_root, dest) = scratch();
    let start = Instant::now();
    let err = ensure_dataset(&dest, &source, &quiet(Duration::from_secs(1))).unwrap_err();
    let elapsed = start.elapsed();
    server.finish();
    assert!(matches!(err, DownloadError::Timeout { .. }), "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(err.to_string().contains(&source.url), "{err}");
    assert_nothing_left(&dest);
}

#[test]
fn truncated_body_is_an_error() {
    let archive = targz(&dataset_entries());
    let half = archive.len() / 2;
    let server = Server::start(vec![Reply::Truncated(archive.clone(), half)]);
    let source = source_for(&server.url, &archive);
    let (_root, dest) = scratch();
    let err = ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap_err();
    server.finish();
    assert!(
        matches!(
            err,
            DownloadError::Transfer { .. } | DownloadError::SizeMismatch { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&source.url), "{err}");
    assert_nothing_left(&dest);
}

#[test]
fn hang_up_before_answering_is_a_transfer_error() {
    // The server was reached, so this is not reported as "no network".
    let server = Server::start(vec![Reply::HangUp; 3]);
    let source = source_for(&server.url, b"never sent");
    let (_root, dest) = scratch();
    let err = ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap_err();
    drop(server); // it may wait for retries that never come; don't join
    assert!(matches!(err, DownloadError::Transfer { .. }), "{err}");
    assert!(err.to_string().contains(&source.url), "{err}");
    assert_nothing_left(&dest);
}

#[test]
fn content_encoding_header_does_not_alter_the_bytes() {
    // Some servers label .tar.gz files `Content-Encoding: gzip`; the archive
    // must still be stored and verified as sent.
    let archive = targz(&dataset_entries());
    let server = Server::start(vec![Reply::Ok(
        archive.clone(),
        "Content-Encoding: gzip\r\n",
    )]);
    let source = source_for(&server.url, &archive);
    let (_root, dest) = scratch();
    assert!(ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap());
    server.finish();
}

/// Serves a hostile archive and checks it is refused without writing anything.
fn assert_unsafe_entry_rejected(entries: &[Entry], entry_name: &str) {
    let archive = targz(entries);
    let (root, err) = fetch_once(archive, |_| {});
    match &err {
        DownloadError::UnsafeEntry { entry, .. } => assert_eq!(entry, entry_name),
        other => panic!("wrong error: {other}"),
    }
    // Nothing escaped into the scratch root either (and the `data` folder
    // the download made is gone again).
    assert_eq!(listing(root.path()), Vec::<String>::new());
}

#[test]
fn parent_dir_entry_is_rejected() {
    let mut entries = dataset_entries();
    entries.push(Entry::RawFile("../evil", b"evil".to_vec()));
    assert_unsafe_entry_rejected(&entries, "../evil");
}

#[test]
fn nested_parent_dir_entry_is_rejected() {
    let mut entries = dataset_entries();
    entries.push(Entry::RawFile(
        "cifar-10-batches-bin/../../evil",
        b"evil".to_vec(),
    ));
    assert_unsafe_entry_rejected(&entries, "cifar-10-batches-bin/../../evil");
}

#[test]
fn absolute_entry_is_rejected() {
    let mut entries = dataset_entries();
    entries.push(Entry::RawFile("/tmp/evil-cifar", b"evil".to_vec()));
    assert_unsafe_entry_rejected(&entries, "/tmp/evil-cifar");
}

#[test]
fn symlink_entry_is_rejected() {
    let mut entries = dataset_entries();
    entries.push(Entry::Symlink("cifar-10-batches-bin/link", "/etc"));
    assert_unsafe_entry_rejected(&entries, "cifar-10-batches-bin/link");
}

#[test]
fn archive_missing_files_is_rejected() {
    let entries: Vec<Entry> = dataset_entries()
        .into_iter()
        .filter(|e| !matches!(e, Entry::File(p, _) if p.ends_with("test_batch.bin")))
        .collect();
    let (_root, err) = fetch_once(targz(&entries), |_| {});
    match &err {
        DownloadError::MissingFiles { missing, .. } => assert_eq!(missing, &["test_batch.bin"]),
        other => panic!("wrong error: {other}"),
    }
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
}

#[test]
fn corrupt_archive_is_rejected() {
    let (_root, err) = fetch_once(b"this is not gzip data".to_vec(), |_| {});
    assert!(matches!(err, DownloadError::CorruptArchive { .. }), "{err}");
}

#[test]
fn incomplete_destination_is_left_alone() {
    let (_root, dest) = scratch();
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("data_batch_1.bin"), b"mine").unwrap();
    // Unreachable URL: the check must happen before any network use.
    let source = source_for("http://127.0.0.1:9/x.tar.gz", b"x");
    let err = ensure_dataset(&dest, &source, &quiet(Duration::from_secs(5))).unwrap_err();
    match &err {
        DownloadError::IncompleteDestination { missing, .. } => assert_eq!(missing.len(), 6),
        other => panic!("wrong error: {other}"),
    }
    assert_eq!(
        std::fs::read(dest.join("data_batch_1.bin")).unwrap(),
        b"mine"
    );
}

#[test]
fn empty_destination_is_filled() {
    let archive = targz(&dataset_entries());
    let server = Server::start(vec![Reply::Ok(archive.clone(), "")]);
    let source = source_for(&server.url, &archive);
    let (_root, dest) = scratch();
    std::fs::create_dir_all(&dest).unwrap();
    download_and_extract(&dest, &source, &quiet(Duration::from_secs(5))).unwrap();
    server.finish();
    assert!(dest.join("test_batch.bin").is_file());
}

#[test]
fn destination_without_a_name_is_rejected() {
    let source = source_for("http://127.0.0.1:9/x.tar.gz", b"x");
    let err =
        download_and_extract(Path::new("/"), &source, &quiet(Duration::from_secs(1))).unwrap_err();
    assert!(matches!(err, DownloadError::BadDestination { .. }), "{err}");
}
