//! Downloading, verifying and unpacking the CIFAR-10 binary data set.
//!
//! [`ensure_dataset`] makes sure a folder such as `data/cifar-10-batches-bin`
//! holds the seven files of the data set, fetching the official archive if it
//! does not. The work is done so that a failure or a crash at any point never
//! leaves a half-made data folder behind:
//!
//! 1. the archive is streamed to a temporary file next to the destination,
//!    hashed (MD5 and SHA-256) and counted on the way;
//! 2. its size and both digests are checked against the [`Source`];
//! 3. it is unpacked into a temporary folder next to the destination, refusing
//!    any entry that would land outside that folder (`..`, absolute paths,
//!    links);
//! 4. the unpacked folder is checked for the seven expected files, flushed to
//!    disk, and only then renamed into place, in one atomic step.
//!
//! Temporary files and folders are removed on every path, success or error.
//!
//! HTTP client: `ureq`, because it is small, blocking, speaks https through
//! rustls (no OpenSSL, no system libraries) and needs no async runtime. Its
//! `gzip` feature is left off on purpose: transparent decompression (a server
//! may send `Content-Encoding: gzip` for a `.tar.gz`) would change the bytes
//! whose digests we verify.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use md5::Md5;
use sha2::{Digest, Sha256};

/// Name of the top folder inside the official archive.
pub const ARCHIVE_FOLDER: &str = "cifar-10-batches-bin";

/// The files that make a complete data set folder.
pub const EXPECTED_FILES: [&str; 7] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
    "batches.meta.txt",
];

/// Where to fetch the archive from, and what it must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// URL of the `.tar.gz` archive (http or https).
    pub url: String,
    /// Exact size of the archive in bytes.
    pub size: u64,
    /// Expected MD5 of the archive, as hex (case does not matter).
    pub md5: String,
    /// Expected SHA-256 of the archive, as hex (case does not matter).
    pub sha256: String,
}

impl Source {
    /// This archive fetched from `url` instead (a mirror, or a proxy's
    /// address): its size and checksums must still match.
    pub fn from_url(self, url: Option<&str>) -> Source {
        match url {
            Some(url) => Source {
                url: url.to_owned(),
                ..self
            },
            None => self,
        }
    }

    /// The official archive published by the data set's authors.
    pub fn official() -> Source {
        Source {
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".to_owned(),
            size: 170_052_171,
            md5: "c32a1d4ab5d03f1284b67883e8d87530".to_owned(),
            sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd".to_owned(),
        }
    }
}

/// How to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Limit for connecting, and for any wait without receiving data
    /// (name lookup, response headers, each read of the body).
    pub timeout: Duration,
    /// Show a progress bar (in bytes) on standard error.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(30),
            progress: true,
        }
    }
}

/// Which digest did not match, for [`DownloadError::ChecksumMismatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5.
    Md5,
    /// SHA-256.
    Sha256,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        })
    }
}

/// Everything that can go wrong while getting the data set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The server could not be reached at all (no network, DNS failure,
    /// connection refused).
    #[error(
        "cannot reach {url}: {reason}. No network? Get cifar-10-binary.tar.gz elsewhere and \
         unpack it here (`tar xzf cifar-10-binary.tar.gz -C {}`), or point --data at a folder \
         that holds the CIFAR-10 binary files; behind a proxy or with a mirror of the same \
         archive, give its address with --url (or CIFAR10_URL)",
        dir.parent().map_or_else(|| ".".into(), |p| p.display().to_string())
    )]
    Network {
        /// The URL that was requested.
        url: String,
        /// The data folder the user may fill by hand.
        dir: PathBuf,
        /// What the network stack said.
        reason: String,
    },

    /// Nothing was received for longer than [`Options::timeout`].
    #[error("timed out after {timeout:?} without data from {url} ({phase})")]
    Timeout {
        /// The URL that was requested.
        url: String,
        /// The configured limit.
        timeout: Duration,
        /// Which step timed out, as ureq names it.
        phase: String,
    },

    /// The server answered with a status other than 200.
    #[error("{url} answered HTTP {status} (expected 200)")]
    HttpStatus {
        /// The URL that was requested.
        url: String,
        /// The status code received.
        status: u16,
    },

    /// The transfer broke off or was malformed (e.g. connection closed early).
    #[error("download of {url} failed after {received} bytes: {reason}")]
    Transfer {
        /// The URL that was requested.
        url: String,
        /// Bytes received before the failure.
        received: u64,
        /// What went wrong.
        reason: String,
    },

    /// The archive does not have the expected size.
    #[error(
        "size mismatch for {url}: expected {expected} bytes, got {}",
        if got > expected { "more".to_owned() } else { got.to_string() }
    )]
    SizeMismatch {
        /// The URL that was requested.
        url: String,
        /// Size from the [`Source`].
        expected: u64,
        /// Size announced or received; if the server sent too much, the
        /// download stops at `expected + 1`.
        got: u64,
    },

    /// The archive's digest differs from the expected one.
    #[error("{algorithm} checksum mismatch for {url}: expected {expected}, got {got}")]
    ChecksumMismatch {
        /// The URL that was requested.
        url: String,
        /// Which digest failed.
        algorithm: Algorithm,
        /// Expected digest, lower-case hex.
        expected: String,
        /// Computed digest, lower-case hex.
        got: String,
    },

    /// The archive holds an entry that would be written outside its folder,
    /// or a link.
    #[error("archive from {url} has an unsafe entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The URL the archive came from.
        url: String,
        /// The entry's path as stored in the archive.
        entry: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The archive could not be read (bad gzip or tar data).
    #[error("archive from {url} is corrupt")]
    CorruptArchive {
        /// The URL the archive came from.
        url: String,
        /// The decoding error.
        source: io::Error,
    },

    /// The archive lacks some of the [`EXPECTED_FILES`].
    #[error("archive from {url} lacks {ARCHIVE_FOLDER}/{}", missing.join(", "))]
    MissingFiles {
        /// The URL the archive came from.
        url: String,
        /// The expected files it lacks.
        missing: Vec<String>,
    },

    /// The destination exists, is not empty, and is not a complete data set;
    /// it is left alone rather than overwritten.
    #[error(
        "{} exists but is not a complete data set (missing {}); nothing was changed there: pass another --data folder (a new one is downloaded into), or add the missing files",
        dir.display(),
        missing.join(", ")
    )]
    IncompleteDestination {
        /// The destination folder.
        dir: PathBuf,
        /// The expected files it lacks.
        missing: Vec<String>,
    },

    /// The destination path cannot hold a folder (e.g. `/` or `..`).
    #[error("{} is not usable as a data folder", dir.display())]
    BadDestination {
        /// The destination given.
        dir: PathBuf,
    },

    /// A local file system operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, e.g. "cannot create".
        action: &'static str,
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Ensures `dir` (e.g. `data/cifar-10-batches-bin`) holds the data set;
/// downloads, verifies (size, MD5, SHA-256) and extracts it atomically if
/// missing. Returns `Ok(false)` if it was already there (without touching the
/// network), `Ok(true)` if it was downloaded.
pub fn ensure_dataset(dir: &Path, source: &Source, opts: &Options) -> Result<bool, DownloadError> {
    if missing_files(dir).is_empty() {
        return Ok(false);
    }
    download_and_extract(dir, source, opts)?;
    Ok(true)
}

/// Downloads, verifies and extracts the archive so that `dir` becomes the
/// archive's `cifar-10-batches-bin` folder. `dir` must not exist, or be empty.
///
/// If another process completes `dir` meanwhile, that is accepted as success.
pub fn download_and_extract(
    dir: &Path,
    source: &Source,
    opts: &Options,
) -> Result<(), DownloadError> {
    let parent = parent_dir(dir)?;
    check_destination_free(dir)?;
    // A folder this call creates goes again if the download fails, so that a
    // failed first run leaves no empty `data/` behind.
    let created = (!parent.exists()).then(|| parent.clone());
    fs::create_dir_all(&parent).map_err(io_err("cannot create", &parent))?;
    let result = fetch_and_unpack(dir, &parent, source, opts);
    if let (Err(_), Some(created)) = (&result, created) {
        // Only if empty: whatever else is there stays.
        let _ = fs::remove_dir(created);
    }
    result
}

/// The body of [`download_and_extract`], once `parent` exists.
fn fetch_and_unpack(
    dir: &Path,
    parent: &Path,
    source: &Source,
    opts: &Options,
) -> Result<(), DownloadError> {
    let parent = parent.to_path_buf();

    let mut archive = tempfile::Builder::new()
        .prefix(".cifar-download-")
        .suffix(".tar.gz.part")
        .tempfile_in(&parent)
        .map_err(io_err("cannot create a temporary file in", &parent))?;
    let digests = fetch(source, opts, dir, archive.as_file_mut())?;
    verify(source, &digests)?;

    let staging = tempfile::Builder::new()
        .prefix(".cifar-extract-")
        .tempdir_in(&parent)
        .map_err(io_err("cannot create a temporary folder in", &parent))?;
    let archive_path = archive.path().to_path_buf();
    let file = archive.as_file_mut();
    file.rewind()
        .map_err(io_err("cannot read back", &archive_path))?;
    unpack(&source.url, file, staging.path())?;

    let unpacked = staging.path().join(ARCHIVE_FOLDER);
    let missing = missing_files(&unpacked);
    if !missing.is_empty() {
        return Err(DownloadError::MissingFiles {
            url: source.url.clone(),
            missing,
        });
    }
    install(&unpacked, dir)
    // `staging` and `archive` are removed when dropped here.
}

/// The files of [`EXPECTED_FILES`] that are not regular files in `dir`.
fn missing_files(dir: &Path) -> Vec<String> {
    EXPECTED_FILES
        .iter()
        .filter(|name| !dir.join(name).is_file())
        .map(|name| (*name).to_owned())
        .collect()
}

/// The folder that will hold `dir`, and the temporary files next to it.
fn parent_dir(dir: &Path) -> Result<PathBuf, DownloadError> {
    match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(_)) if parent.as_os_str().is_empty() => Ok(PathBuf::from(".")),
        (Some(parent), Some(_)) => Ok(parent.to_path_buf()),
        _ => Err(DownloadError::BadDestination {
            dir: dir.to_path_buf(),
        }),
    }
}

/// Fails early (before any download) if `dir` holds something we would
/// have to overwrite.
fn check_destination_free(dir: &Path) -> Result<(), DownloadError> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot read", dir)(e)),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(DownloadError::IncompleteDestination {
                dir: dir.to_path_buf(),
                missing: missing_files(dir),
            }),
        },
    }
}

/// Builds a `map_err` closure for a local I/O error on `path`.
fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DownloadError {
    let path = path.to_path_buf();
    move |source| DownloadError::Io {
        action,
        path,
        source,
    }
}

// ---------------------------------------------------------------------------
// Download
// ---------------------------------------------------------------------------

/// Size and digests of the bytes received.
struct Digests {
    size: u64,
    md5: String,
    sha256: String,
}

/// An agent whose every wait is bounded by `timeout`, which reports HTTP
/// error statuses as responses and asks for the raw (unencoded) bytes.
fn agent(timeout: Duration) -> ureq::Agent {
    let t = Some(timeout);
    ureq::Agent::config_builder()
        .timeout_resolve(t)
        .timeout_connect(t)
        .timeout_send_request(t)
        .timeout_recv_response(t)
        .timeout_per_read(t)
        .timeout_per_write(t)
        .http_status_as_error(false)
        .accept_encoding("identity")
        .build()
        .new_agent()
}

/// Streams the archive into `out`, hashing as it goes.
fn fetch(
    source: &Source,
    opts: &Options,
    dir: &Path,
    out: &mut File,
) -> Result<Digests, DownloadError> {
    let url = &source.url;
    let response = agent(opts.timeout)
        .get(url)
        .call()
        .map_err(|e| request_error(e, url, dir, opts.timeout, None))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(DownloadError::HttpStatus {
            url: url.clone(),
            status,
        });
    }
    let body = response.into_body();
    if let Some(announced) = body.content_length() {
        if announced != source.size {
            return Err(size_mismatch(source, announced));
        }
    }
    let bar = progress_bar(opts.progress, source.size);
    // Read at most one byte more than expected, to detect oversize bodies
    // without letting a broken server fill the disk.
    let mut reader = body.into_reader().take(source.size.saturating_add(1));
    let result = copy_hashing(&mut reader, out, &bar);
    bar.finish_and_clear();
    let digests = result.map_err(|e| match e {
        CopyError::Read(e, received) => {
            request_error(e.into(), url, dir, opts.timeout, Some(received))
        }
        CopyError::Write(e) => DownloadError::Io {
            action: "cannot write the download next to",
            path: dir.to_path_buf(),
            source: e,
        },
    })?;
    out.sync_all()
        .map_err(io_err("cannot flush the download next to", dir))?;
    Ok(digests)
}

/// A failed copy: which side failed, and how many bytes had arrived.
enum CopyError {
    Read(io::Error, u64),
    Write(io::Error),
}

/// Copies `reader` to `out`, feeding both hashers and the progress bar.
fn copy_hashing(
    reader: &mut impl Read,
    out: &mut impl Write,
    bar: &ProgressBar,
) -> Result<Digests, CopyError> {
    let mut md5 = Md5::new();
    let mut sha256 = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e, size)),
        };
        let chunk = &buf[..n];
        md5.update(chunk);
        sha256.update(chunk);
        out.write_all(chunk).map_err(CopyError::Write)?;
        size += n as u64;
        bar.set_position(size);
    }
    out.flush().map_err(CopyError::Write)?;
    Ok(Digests {
        size,
        md5: hex(&md5.finalize()),
        sha256: hex(&sha256.finalize()),
    })
}

/// A byte progress bar on standard error, or a hidden one.
fn progress_bar(visible: bool, total: u64) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("CIFAR-10");
    bar
}

/// Turns a ureq error into a [`DownloadError`] that says what to do.
///
/// `received` is `None` while no response has arrived yet: I/O errors then
/// mean the server could not be reached (DNS failure, refused, unreachable),
/// and so do timeouts while resolving or connecting. Once a response is in,
/// errors are transfer errors.
fn request_error(
    err: ureq::Error,
    url: &str,
    dir: &Path,
    timeout: Duration,
    received: Option<u64>,
) -> DownloadError {
    let network = |reason: String| DownloadError::Network {
        url: url.to_owned(),
        dir: dir.to_path_buf(),
        reason,
    };
    let timed_out = |phase: String| DownloadError::Timeout {
        url: url.to_owned(),
        timeout,
        phase,
    };
    match (err, received) {
        (ureq::Error::Timeout(phase @ (ureq::Timeout::Resolve | ureq::Timeout::Connect)), _) => {
            network(format!("no answer within {timeout:?} ({phase})"))
        }
        (ureq::Error::Timeout(phase), _) => timed_out(phase.to_string()),
        (ureq::Error::Io(e), _) if is_timeout(&e) => timed_out(e.to_string()),
        (ureq::Error::HostNotFound, _) => network("host name not found".to_owned()),
        (ureq::Error::ConnectionFailed, _) => network("connection failed".to_owned()),
        (ureq::Error::Io(e), None) if !is_server_fault(&e) => network(e.to_string()),
        (other, received) => DownloadError::Transfer {
            url: url.to_owned(),
            received: received.unwrap_or(0),
            reason: other.to_string(),
        },
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// I/O errors that show a server was reached but misbehaved (as opposed to
/// name lookup, routing or connection failures).
fn is_server_fault(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
    )
}

fn size_mismatch(source: &Source, got: u64) -> DownloadError {
    DownloadError::SizeMismatch {
        url: source.url.clone(),
        expected: source.size,
        got,
    }
}

/// Checks size, then MD5, then SHA-256.
fn verify(source: &Source, got: &Digests) -> Result<(), DownloadError> {
    if got.size != source.size {
        return Err(size_mismatch(source, got.size));
    }
    let checks = [
        (Algorithm::Md5, &source.md5, &got.md5),
        (Algorithm::Sha256, &source.sha256, &got.sha256),
    ];
    for (algorithm, expected, actual) in checks {
        if !expected.trim().eq_ignore_ascii_case(actual) {
            return Err(DownloadError::ChecksumMismatch {
                url: source.url.clone(),
                algorithm,
                expected: expected.trim().to_ascii_lowercase(),
                got: actual.clone(),
            });
        }
    }
    Ok(())
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------

/// Unpacks the `.tar.gz` in `archive` into `into`, which must exist.
///
/// Only regular files and folders are written; links and entries whose path
/// is absolute or contains `..` are refused; other kinds (devices, FIFOs,
/// global headers) are skipped. Every file is flushed to disk.
fn unpack(url: &str, archive: &mut File, into: &Path) -> Result<(), DownloadError> {
    let corrupt = |source: io::Error| DownloadError::CorruptArchive {
        url: url.to_owned(),
        source,
    };
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(archive)));
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let relative = safe_relative_path(url, &raw_path)?;
        let target = into.join(&relative);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(io_err("cannot create", &target))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                write_file(&mut entry, &target).map_err(|e| match e {
                    CopyError::Read(e, _) => corrupt(e),
                    CopyError::Write(e) => io_err("cannot write", &target)(e),
                })?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(DownloadError::UnsafeEntry {
                    url: url.to_owned(),
                    entry: raw_path,
                    reason: "links are not allowed",
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The entry path as a relative path with only normal components, or an
/// error if it is absolute or climbs with `..`.
fn safe_relative_path(url: &str, raw: &str) -> Result<PathBuf, DownloadError> {
    let unsafe_entry = |reason| DownloadError::UnsafeEntry {
        url: url.to_owned(),
        entry: raw.to_owned(),
        reason,
    };
    let mut out = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry("`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry("absolute paths are not allowed"))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(unsafe_entry("empty path"));
    }
    Ok(out)
}

/// Writes one archive entry to `target` (creating its folder) and syncs it.
fn write_file(entry: &mut impl Read, target: &Path) -> Result<(), CopyError> {
    if let Some(folder) = target.parent() {
        fs::create_dir_all(folder).map_err(CopyError::Write)?;
    }
    let mut file = File::create(target).map_err(CopyError::Write)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e, 0)),
        };
        file.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    file.sync_all().map_err(CopyError::Write)
}

/// Renames the complete `unpacked` folder to `dir` in one step.
fn install(unpacked: &Path, dir: &Path) -> Result<(), DownloadError> {
    // An empty `dir` (checked before the download) may be replaced; a rename
    // onto a non-empty folder fails, which is what we want.
    if dir.is_dir() {
        let _ = fs::remove_dir(dir);
    }
    match fs::rename(unpacked, dir) {
        Ok(()) => {
            sync_dir(dir.parent());
            Ok(())
        }
        // Someone else finished the same job meanwhile: fine.
        Err(_) if missing_files(dir).is_empty() => Ok(()),
        Err(e) => Err(io_err("cannot move the data set into", dir)(e)),
    }
}

/// Best-effort flush of a folder's entries (the rename) to disk.
fn sync_dir(dir: Option<&Path>) {
    let dir = match dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}
