// Test-only, long on purpose: the trace parser and the file-system model are one state machine
// over the same system calls.
//! The trace and the file-system model of the crash-state test (see the parent module).
//!
//! [`Trace::parse`] reads what `strace -f -xx` wrote; [`Replay`] applies the calls, in the
//! order they completed, to a model of the directory tree under one root, keeping for every
//! file and directory two states: what a running system shows (the *volatile* names and sizes,
//! needed to follow the calls) and what a crash would keep (the *durable* content and names).
//! A state is kept or dropped by this rule, the weakest ordering POSIX promises and the one
//! ALICE (Pillai et al., OSDI 2014) calls the "conservative" file system:
//!
//! - a file's bytes and length (`write`, `pwrite64`, `writev`, `pwritev`, `ftruncate`,
//!   `fallocate`) become durable when an `fsync` or `fdatasync` of that file that *started*
//!   after they completed returns; `sync_file_range` makes nothing durable (it neither
//!   flushes the metadata nor the device's cache); `sync`/`syncfs` make everything durable;
//! - a directory entry (a created file, `mkdir`, `rename`, `link`, `unlink`, `rmdir`)
//!   becomes durable when an `fsync` of *that directory* returns; a rename between two
//!   directories is two entries, each durable with its own directory;
//! - `O_DIRECT` changes nothing here: it bypasses the page cache, not the device's cache or
//!   the file's metadata, so an `O_DIRECT` write is durable only after an fsync, like any
//!   other (and the model ignores the flag).
//!
//! A crash state is the durable tree at a point of the trace ([`Mode::Synced`]), or that tree
//! with part of what was not yet durable applied as well ([`Mode::Partial`]): for each file a
//! prefix of its later writes in order, the last of them torn at a random byte, and for each
//! directory a prefix of its later entry changes.
//!
//! Shared writable mappings (`mmap` + `msync`) are not modeled; neither RocksDB (with
//! `allow_mmap_writes` off, its default) nor sled nor the blob store write through one.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::Rng;

/// The system calls traced: what changes files or their names, what makes them durable, and
/// what is needed to follow file descriptors and offsets.
const TRACED: &str = "open,openat,creat,close,dup,dup2,dup3,fcntl,lseek,write,pwrite64,writev,\
                      pwritev,pwritev2,fsync,fdatasync,sync_file_range,sync,syncfs,rename,\
                      renameat,renameat2,unlink,unlinkat,ftruncate,truncate,mkdir,mkdirat,rmdir,\
                      link,linkat,fallocate";

/// The longest write the trace keeps whole; a longer one fails the parse (strace would cut it).
const MAX_WRITE: usize = 4 << 20;

/// `strace` running `program`, writing the trace to `trace`.
pub fn traced(program: &Path, trace: &Path) -> Command {
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "--seccomp-bpf", "-xx", "-e", "signal=none"])
        .arg("-s")
        .arg(MAX_WRITE.to_string())
        .arg("-e")
        .arg(format!("trace={}", TRACED.replace(' ', "")))
        .arg("-o")
        .arg(trace)
        .arg("--")
        .arg(program);
    command
}

/// One argument of a traced call, as strace prints it.
#[derive(Clone, Debug)]
enum Arg {
    /// A number, a flag set, a constant: the text as printed.
    Raw(String),
    /// A byte string (`-xx` prints every byte as `\xNN`).
    Bytes(Vec<u8>),
    /// `[...]`.
    List(Vec<Arg>),
    /// `{name=value, ...}`.
    Struct(Vec<(String, Arg)>),
}

impl Arg {
    fn raw(&self) -> &str {
        match self {
            Arg::Raw(text) => text,
            other => panic!("expected a number or flags, found {other:?}"),
        }
    }

    fn int(&self) -> i64 {
        let text = self.raw();
        let parsed = if let Some(hex) = text.strip_prefix("0x") {
            i64::from_str_radix(hex, 16).ok()
        } else {
            text.parse().ok()
        };
        parsed.unwrap_or_else(|| panic!("not a number: {text}"))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Arg::Bytes(bytes) => bytes,
            other => panic!("expected a string, found {other:?}"),
        }
    }

    /// The bytes of an iovec array.
    fn iovecs(&self) -> Vec<u8> {
        let Arg::List(items) = self else {
            panic!("expected an iovec array, found {self:?}")
        };
        let mut out = Vec::new();
        for item in items {
            let Arg::Struct(fields) = item else {
                panic!("expected an iovec, found {item:?}")
            };
            let base = fields
                .iter()
                .find(|(name, _)| name == "iov_base")
                .expect("iov_base");
            out.extend_from_slice(base.1.bytes());
        }
        out
    }
}

/// A parser of strace's argument syntax.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) {
        self.skip_spaces();
        assert_eq!(
            self.peek(),
            Some(byte),
            "expected {:?} at {} in {}",
            byte as char,
            self.at,
            String::from_utf8_lossy(&self.text[..self.text.len().min(300)])
        );
        self.at += 1;
    }

    fn string(&mut self) -> Vec<u8> {
        self.expect(b'"');
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => {
                    let escape = self.text[self.at + 1];
                    if escape == b'x' {
                        let hex = std::str::from_utf8(&self.text[self.at + 2..self.at + 4])
                            .expect("hex digits");
                        out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                        self.at += 4;
                    } else {
                        out.push(match escape {
                            b'n' => b'\n',
                            b't' => b'\t',
                            b'r' => b'\r',
                            b'v' => 0x0b,
                            b'f' => 0x0c,
                            other => other,
                        });
                        self.at += 2;
                    }
                }
                Some(byte) => {
                    out.push(byte);
                    self.at += 1;
                }
                None => panic!("unterminated string"),
            }
        }
        assert!(
            !self.text[self.at..].starts_with(b"..."),
            "strace cut a string of {} bytes: raise MAX_WRITE",
            out.len()
        );
        out
    }

    fn value(&mut self) -> Arg {
        self.skip_spaces();
        match self.peek() {
            Some(b'"') => Arg::Bytes(self.string()),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        break;
                    }
                    items.push(self.value());
                    self.skip_spaces();
                    if self.peek() == Some(b',') {
                        self.at += 1;
                    }
                }
                Arg::List(items)
            }
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                loop {
                    self.skip_spaces();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                        break;
                    }
                    let start = self.at;
                    while !matches!(self.peek(), Some(b'=' | b',' | b'}') | None) {
                        self.at += 1;
                    }
                    let name = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
                    let value = if self.peek() == Some(b'=') {
                        self.at += 1;
                        self.value()
                    } else {
                        Arg::Raw(name.clone())
                    };
                    fields.push((name.trim().to_string(), value));
                    self.skip_spaces();
                    if self.peek() == Some(b',') {
                        self.at += 1;
                    }
                }
                Arg::Struct(fields)
            }
            _ => {
                let start = self.at;
                let mut depth = 0usize;
                while let Some(byte) = self.peek() {
                    match byte {
                        b'(' => depth += 1,
                        b')' if depth > 0 => depth -= 1,
                        b',' | b']' | b'}' | b')' if depth == 0 => break,
                        _ => {}
                    }
                    self.at += 1;
                }
                Arg::Raw(
                    String::from_utf8_lossy(&self.text[start..self.at])
                        .trim()
                        .to_string(),
                )
            }
        }
    }

    /// The arguments up to the closing parenthesis, then the return value (`None` for `?`).
    fn call(&mut self) -> (Vec<Arg>, Option<i64>) {
        let mut args = Vec::new();
        loop {
            self.skip_spaces();
            if self.peek() == Some(b')') {
                self.at += 1;
                break;
            }
            args.push(self.value());
            self.skip_spaces();
            if self.peek() == Some(b',') {
                self.at += 1;
            }
        }
        let rest = String::from_utf8_lossy(&self.text[self.at..]);
        let ret = rest
            .trim_start()
            .strip_prefix('=')
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse::<i64>().ok());
        (args, ret)
    }
}

/// A traced call that completed.
#[derive(Debug)]
pub struct Call {
    /// The line at which it started (its entry), in the order strace saw events.
    start: usize,
    /// The line at which it returned.
    end: usize,
    name: String,
    args: Vec<Arg>,
    ret: i64,
}

/// The calls of a trace, in the order they completed.
#[derive(Debug)]
pub struct Trace {
    calls: Vec<Call>,
}

impl Trace {
    /// Parses strace's output (`-f`, so each line starts with the thread id).
    ///
    /// # Panics
    /// On a line it cannot read, a string strace cut, or a call still unfinished at the end
    /// that is not the process's exit.
    pub fn parse(text: &[u8]) -> Trace {
        let mut unfinished: HashMap<String, (usize, Vec<u8>)> = HashMap::new();
        let mut calls = Vec::new();
        for (line_number, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(space) = line.iter().position(|&b| b == b' ') else {
                continue;
            };
            let pid = String::from_utf8_lossy(&line[..space]).into_owned();
            // strace pads the thread id to a width of its own.
            let body = line[space..].trim_ascii_start();
            let (start, full): (usize, Vec<u8>) = if let Some(rest) = body.strip_prefix(b"<... ") {
                let Some(resumed) = rest.windows(9).position(|w| w == b" resumed>") else {
                    continue;
                };
                let Some((start, mut head)) = unfinished.remove(&pid) else {
                    continue;
                };
                head.extend_from_slice(&rest[resumed + 9..]);
                (start, head)
            } else if let Some(head) = body.strip_suffix(b" <unfinished ...>") {
                if head.starts_with(b"close(") {
                    // The descriptor's number is free as soon as `close` starts: another
                    // thread's `open` may get it back before this `close` is seen to return, so
                    // the close takes effect here (its resumption is skipped as unknown).
                    let mut full = head.to_vec();
                    full.extend_from_slice(b") = 0");
                    unfinished.insert(pid, (line_number, b"closed(".to_vec()));
                    (line_number, full)
                } else {
                    unfinished.insert(pid, (line_number, head.to_vec()));
                    continue;
                }
            } else {
                (line_number, body.to_vec())
            };
            let Some(open) = full.iter().position(|&b| b == b'(') else {
                continue;
            };
            let name = String::from_utf8_lossy(&full[..open]).into_owned();
            if name == "closed" || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let mut parser = Parser {
                text: &full,
                at: open + 1,
            };
            let (args, ret) = parser.call();
            // `?`: the process ended inside the call; a failed call changed nothing.
            let Some(ret) = ret.filter(|&r| r >= 0) else {
                continue;
            };
            calls.push(Call {
                start,
                end: line_number,
                name,
                args,
                ret,
            });
        }
        Trace { calls }
    }

    /// How many calls completed.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// The positions (indexes into the calls) of the syncs: a crash state changes only there.
    pub fn sync_points(&self) -> Vec<usize> {
        self.calls
            .iter()
            .enumerate()
            .filter(|(_, call)| {
                matches!(
                    call.name.as_str(),
                    "fsync" | "fdatasync" | "sync" | "syncfs"
                )
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// How many calls of each name completed.
    pub fn counts(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for call in &self.calls {
            *counts.entry(call.name.as_str()).or_default() += 1;
        }
        counts
    }
}

/// Which of the not yet durable changes a crash state keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// None: only what a sync made durable.
    Synced,
    /// For each file a prefix of its later writes (the last one torn) and for each directory
    /// a prefix of its later entry changes, chosen by the seed.
    Partial(u64),
}

type Ino = usize;

#[derive(Clone, Debug)]
enum FileChange {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Clone, Debug)]
enum EntryChange {
    Add(OsString, Ino),
    Remove(OsString),
}

#[derive(Debug)]
enum Node {
    File {
        durable: Vec<u8>,
        /// Changes not yet durable, with the position of the call that made each.
        pending: Vec<(usize, FileChange)>,
        /// The length a running system shows.
        len: u64,
    },
    Dir {
        entries: BTreeMap<OsString, Ino>,
        durable: BTreeMap<OsString, Ino>,
        pending: Vec<(usize, EntryChange)>,
    },
}

fn apply_file_change(content: &mut Vec<u8>, change: &FileChange) {
    match change {
        FileChange::Write(offset, data) => {
            let offset = usize::try_from(*offset).expect("offset fits");
            if content.len() < offset + data.len() {
                content.resize(offset + data.len(), 0);
            }
            content[offset..offset + data.len()].copy_from_slice(data);
        }
        FileChange::SetLen(len) => content.resize(usize::try_from(*len).expect("length fits"), 0),
    }
}

fn apply_entry_change(entries: &mut BTreeMap<OsString, Ino>, change: &EntryChange) {
    match change {
        EntryChange::Add(name, ino) => {
            entries.insert(name.clone(), *ino);
        }
        EntryChange::Remove(name) => {
            entries.remove(name);
        }
    }
}

#[derive(Clone, Debug)]
enum Target {
    Node(Ino),
    /// A file outside the root (or a pipe, a socket): not modeled.
    Outside,
    Stdout,
}

#[derive(Clone, Debug)]
struct Fd {
    target: Target,
    path: PathBuf,
    /// Shared by duplicates, as the kernel's open file description is.
    offset: std::rc::Rc<std::cell::Cell<u64>>,
    append: bool,
}

/// A line the traced process wrote to its standard output: anything it acknowledges
/// happened before the `write` that completed the line.
#[derive(Clone, Debug)]
pub struct Output {
    /// The line, without its newline.
    pub line: String,
}

/// The model of the tree under `root` while the trace is replayed.
#[derive(Debug)]
pub struct Replay {
    root: PathBuf,
    cwd: PathBuf,
    nodes: Vec<Node>,
    fds: HashMap<i64, Fd>,
    stdout: Vec<u8>,
    output: Vec<Output>,
    /// Calls applied so far.
    applied: usize,
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

impl Replay {
    /// Starts from `initial`, a copy of the tree under `root` taken before the traced process
    /// started, all of it durable; `cwd` is the traced process's working directory.
    pub fn new(initial: &Path, root: &Path, cwd: &Path) -> Replay {
        let mut replay = Replay {
            root: root.to_path_buf(),
            cwd: cwd.to_path_buf(),
            nodes: Vec::new(),
            fds: HashMap::new(),
            stdout: Vec::new(),
            output: Vec::new(),
            applied: 0,
        };
        replay.load(initial);
        for (fd, target) in [
            (1, Target::Stdout),
            (0, Target::Outside),
            (2, Target::Outside),
        ] {
            replay.fds.insert(
                fd,
                Fd {
                    target,
                    path: PathBuf::new(),
                    offset: Default::default(),
                    append: true,
                },
            );
        }
        replay
    }

    fn load(&mut self, path: &Path) -> Ino {
        let meta = std::fs::symlink_metadata(path).expect("read the initial tree");
        let ino = self.nodes.len();
        if meta.is_dir() {
            self.nodes.push(Node::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                pending: Vec::new(),
            });
            let mut children = BTreeMap::new();
            for entry in std::fs::read_dir(path).expect("list the initial tree") {
                let entry = entry.expect("list the initial tree");
                let child = self.load(&entry.path());
                children.insert(entry.file_name(), child);
            }
            self.nodes[ino] = Node::Dir {
                entries: children.clone(),
                durable: children,
                pending: Vec::new(),
            };
        } else {
            let content = std::fs::read(path).expect("read the initial tree");
            self.nodes.push(Node::File {
                len: content.len() as u64,
                durable: content,
                pending: Vec::new(),
            });
        }
        ino
    }

    /// What the traced process printed, line by line, up to the calls applied so far.
    pub fn output(&self) -> &[Output] {
        &self.output
    }

    /// The path relative to the root, if it is under it.
    fn under_root(&self, path: &Path) -> Option<Vec<OsString>> {
        let path = normalize(path);
        let rest = path.strip_prefix(&self.root).ok()?;
        Some(
            rest.components()
                .map(|c| c.as_os_str().to_os_string())
                .collect(),
        )
    }

    fn lookup(&self, parts: &[OsString]) -> Option<Ino> {
        let mut ino = 0;
        for part in parts {
            let Node::Dir { entries, .. } = &self.nodes[ino] else {
                return None;
            };
            ino = *entries.get(part)?;
        }
        Some(ino)
    }

    /// The directory holding `parts` and the last name.
    fn parent(&self, parts: &[OsString]) -> (Ino, OsString) {
        let (name, dir) = parts.split_last().expect("not the root itself");
        let ino = self
            .lookup(dir)
            .unwrap_or_else(|| panic!("the model has no directory {dir:?}"));
        (ino, name.clone())
    }

    fn resolve(&self, dirfd: Option<&Arg>, path: &[u8]) -> PathBuf {
        let path = PathBuf::from(OsString::from_vec(path.to_vec()));
        if path.is_absolute() {
            return path;
        }
        let base = match dirfd.map(Arg::raw) {
            None | Some("AT_FDCWD") => self.cwd.clone(),
            Some(fd) => {
                let fd: i64 = fd.parse().expect("a directory descriptor");
                self.fds.get(&fd).expect("a known descriptor").path.clone()
            }
        };
        base.join(path)
    }

    fn change_entry(&mut self, dir: Ino, at: usize, change: EntryChange) {
        let Node::Dir {
            entries, pending, ..
        } = &mut self.nodes[dir]
        else {
            panic!("not a directory")
        };
        apply_entry_change(entries, &change);
        pending.push((at, change));
    }

    fn change_file(&mut self, ino: Ino, at: usize, change: FileChange) {
        let Node::File { pending, len, .. } = &mut self.nodes[ino] else {
            panic!("a write to a directory")
        };
        *len = match &change {
            FileChange::Write(offset, data) => (*len).max(offset + data.len() as u64),
            FileChange::SetLen(new) => *new,
        };
        pending.push((at, change));
    }

    /// Makes durable what completed before the line `start` (where a sync started). Calls are
    /// in the order they completed, so what completed before is a prefix of `pending`.
    fn sync_node(&mut self, ino: Ino, start: usize, calls: &[Call]) {
        match &mut self.nodes[ino] {
            Node::File {
                durable, pending, ..
            } => {
                let split = pending
                    .iter()
                    .position(|(at, _)| calls[*at].end > start)
                    .unwrap_or(pending.len());
                let keep = pending.split_off(split);
                for (_, change) in pending.drain(..) {
                    apply_file_change(durable, &change);
                }
                *pending = keep;
            }
            Node::Dir {
                durable, pending, ..
            } => {
                let split = pending
                    .iter()
                    .position(|(at, _)| calls[*at].end > start)
                    .unwrap_or(pending.len());
                let keep = pending.split_off(split);
                for (_, change) in pending.drain(..) {
                    apply_entry_change(durable, &change);
                }
                *pending = keep;
            }
        }
    }

    fn write(&mut self, fd: i64, offset: Option<u64>, data: &[u8], at: usize) {
        let Some(file) = self.fds.get(&fd).cloned() else {
            return;
        };
        match file.target {
            Target::Outside => {}
            Target::Stdout => {
                self.stdout.extend_from_slice(data);
                while let Some(end) = self.stdout.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.stdout.drain(..=end).collect();
                    self.output.push(Output {
                        line: String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                    });
                }
            }
            Target::Node(ino) => {
                let Node::File { len, .. } = &self.nodes[ino] else {
                    panic!("a write to a directory")
                };
                let position = match offset {
                    Some(offset) => offset,
                    None if file.append => *len,
                    None => file.offset.get(),
                };
                if offset.is_none() {
                    file.offset.set(position + data.len() as u64);
                }
                self.change_file(ino, at, FileChange::Write(position, data.to_vec()));
            }
        }
    }

    /// Applies the calls up to (not including) `until`.
    pub fn advance(&mut self, trace: &Trace, until: usize) {
        while self.applied < until {
            let at = self.applied;
            self.apply(&trace.calls, at);
            self.applied += 1;
        }
    }

    fn node_of(&self, fd: i64) -> Option<Ino> {
        match self.fds.get(&fd).map(|f| &f.target) {
            Some(Target::Node(ino)) => Some(*ino),
            _ => None,
        }
    }

    fn apply(&mut self, calls: &[Call], at: usize) {
        let call = &calls[at];
        let args = &call.args;
        let fd_arg = |i: usize| args[i].int();
        match call.name.as_str() {
            "open" | "openat" | "creat" => {
                let (dirfd, path, flags) = match call.name.as_str() {
                    "openat" => (Some(&args[0]), args[1].bytes(), args[2].raw().to_string()),
                    "open" => (None, args[0].bytes(), args[1].raw().to_string()),
                    _ => (
                        None,
                        args[0].bytes(),
                        "O_CREAT|O_WRONLY|O_TRUNC".to_string(),
                    ),
                };
                let path = normalize(&self.resolve(dirfd, path));
                let flag = |name: &str| flags.split('|').any(|f| f == name);
                assert!(!flag("O_TMPFILE"), "O_TMPFILE is not modeled");
                let target = match self.under_root(&path) {
                    None => Target::Outside,
                    Some(parts) => match self.lookup(&parts) {
                        Some(ino) => {
                            if flag("O_TRUNC") && matches!(self.nodes[ino], Node::File { .. }) {
                                self.change_file(ino, at, FileChange::SetLen(0));
                            }
                            Target::Node(ino)
                        }
                        None => {
                            assert!(flag("O_CREAT"), "{path:?} opened but not in the model");
                            let ino = self.nodes.len();
                            self.nodes.push(Node::File {
                                durable: Vec::new(),
                                pending: Vec::new(),
                                len: 0,
                            });
                            let (dir, name) = self.parent(&parts);
                            self.change_entry(dir, at, EntryChange::Add(name, ino));
                            Target::Node(ino)
                        }
                    },
                };
                self.fds.insert(
                    call.ret,
                    Fd {
                        target,
                        path,
                        offset: Default::default(),
                        append: flag("O_APPEND"),
                    },
                );
            }
            "close" => {
                self.fds.remove(&fd_arg(0));
            }
            "dup" | "dup2" | "dup3" => {
                if let Some(file) = self.fds.get(&fd_arg(0)).cloned() {
                    self.fds.insert(call.ret, file);
                }
            }
            "fcntl" => {
                if args[1].raw().starts_with("F_DUPFD") {
                    if let Some(file) = self.fds.get(&fd_arg(0)).cloned() {
                        self.fds.insert(call.ret, file);
                    }
                }
            }
            "lseek" => {
                if let Some(file) = self.fds.get(&fd_arg(0)) {
                    file.offset.set(call.ret as u64);
                }
            }
            "write" => {
                let data = &args[1].bytes()[..call.ret as usize];
                self.write(fd_arg(0), None, data, at);
            }
            "pwrite64" => {
                let data = &args[1].bytes()[..call.ret as usize];
                self.write(fd_arg(0), Some(args[3].int() as u64), data, at);
            }
            "writev" => {
                let data = args[1].iovecs();
                self.write(fd_arg(0), None, &data[..call.ret as usize], at);
            }
            "pwritev" | "pwritev2" => {
                let data = args[1].iovecs();
                self.write(
                    fd_arg(0),
                    Some(args[3].int() as u64),
                    &data[..call.ret as usize],
                    at,
                );
            }
            "ftruncate" => {
                if let Some(ino) = self.node_of(fd_arg(0)) {
                    self.change_file(ino, at, FileChange::SetLen(args[1].int() as u64));
                }
            }
            "truncate" => {
                let path = self.resolve(None, args[0].bytes());
                if let Some(ino) = self.under_root(&path).and_then(|p| self.lookup(&p)) {
                    self.change_file(ino, at, FileChange::SetLen(args[1].int() as u64));
                }
            }
            "fallocate" => {
                if let Some(ino) = self.node_of(fd_arg(0)) {
                    let mode = args[1].raw();
                    assert!(
                        mode == "0" || mode == "FALLOC_FL_KEEP_SIZE",
                        "fallocate mode {mode} is not modeled"
                    );
                    let end = (args[2].int() + args[3].int()) as u64;
                    if mode == "0" {
                        if let Node::File { len, .. } = &self.nodes[ino] {
                            if end > *len {
                                self.change_file(ino, at, FileChange::SetLen(end));
                            }
                        }
                    }
                }
            }
            "fsync" | "fdatasync" => {
                if let Some(ino) = self.node_of(fd_arg(0)) {
                    self.sync_node(ino, call.start, calls);
                }
            }
            "sync" | "syncfs" => {
                for ino in 0..self.nodes.len() {
                    self.sync_node(ino, call.start, calls);
                }
            }
            "sync_file_range" => {}
            "rename" | "renameat" | "renameat2" => {
                let (from, to) = if call.name == "rename" {
                    (
                        self.resolve(None, args[0].bytes()),
                        self.resolve(None, args[1].bytes()),
                    )
                } else {
                    if call.name == "renameat2" {
                        assert!(
                            !args[4].raw().contains("RENAME_EXCHANGE"),
                            "RENAME_EXCHANGE is not modeled"
                        );
                    }
                    (
                        self.resolve(Some(&args[0]), args[1].bytes()),
                        self.resolve(Some(&args[2]), args[3].bytes()),
                    )
                };
                match (self.under_root(&from), self.under_root(&to)) {
                    (None, None) => {}
                    (Some(from), Some(to)) => {
                        let ino = self.lookup(&from).expect("renamed file in the model");
                        let (from_dir, from_name) = self.parent(&from);
                        let (to_dir, to_name) = self.parent(&to);
                        self.change_entry(from_dir, at, EntryChange::Remove(from_name));
                        self.change_entry(to_dir, at, EntryChange::Add(to_name, ino));
                    }
                    _ => panic!("a rename across the root: {from:?} -> {to:?}"),
                }
            }
            "unlink" | "unlinkat" | "rmdir" => {
                let path = if call.name == "unlinkat" {
                    self.resolve(Some(&args[0]), args[1].bytes())
                } else {
                    self.resolve(None, args[0].bytes())
                };
                if let Some(parts) = self.under_root(&path) {
                    let (dir, name) = self.parent(&parts);
                    self.change_entry(dir, at, EntryChange::Remove(name));
                }
            }
            "mkdir" | "mkdirat" => {
                let path = if call.name == "mkdirat" {
                    self.resolve(Some(&args[0]), args[1].bytes())
                } else {
                    self.resolve(None, args[0].bytes())
                };
                if let Some(parts) = self.under_root(&path) {
                    let ino = self.nodes.len();
                    self.nodes.push(Node::Dir {
                        entries: BTreeMap::new(),
                        durable: BTreeMap::new(),
                        pending: Vec::new(),
                    });
                    let (dir, name) = self.parent(&parts);
                    self.change_entry(dir, at, EntryChange::Add(name, ino));
                }
            }
            "link" | "linkat" => {
                let (from, to) = if call.name == "link" {
                    (
                        self.resolve(None, args[0].bytes()),
                        self.resolve(None, args[1].bytes()),
                    )
                } else {
                    (
                        self.resolve(Some(&args[0]), args[1].bytes()),
                        self.resolve(Some(&args[2]), args[3].bytes()),
                    )
                };
                if let (Some(from), Some(to)) = (self.under_root(&from), self.under_root(&to)) {
                    let ino = self.lookup(&from).expect("linked file in the model");
                    let (dir, name) = self.parent(&to);
                    self.change_entry(dir, at, EntryChange::Add(name, ino));
                }
            }
            other => panic!("the trace has a call the model does not know: {other}"),
        }
    }

    /// Writes the crash state at the current point into `out` (which must not exist).
    pub fn materialize(&self, out: &Path, mode: Mode) {
        let mut rng = match mode {
            Mode::Synced => None,
            Mode::Partial(seed) => Some(<StdRng as rand::SeedableRng>::seed_from_u64(seed)),
        };
        self.write_node(0, out, &mut rng);
    }

    fn write_node(&self, ino: Ino, path: &Path, rng: &mut Option<StdRng>) {
        match &self.nodes[ino] {
            Node::File {
                durable, pending, ..
            } => {
                let mut content = durable.clone();
                if let Some(rng) = rng {
                    let keep = rng.gen_range(0..=pending.len());
                    for (_, change) in &pending[..keep] {
                        apply_file_change(&mut content, change);
                    }
                    if let Some((_, FileChange::Write(offset, data))) = pending.get(keep) {
                        let torn = rng.gen_range(0..=data.len());
                        apply_file_change(
                            &mut content,
                            &FileChange::Write(*offset, data[..torn].to_vec()),
                        );
                    }
                }
                std::fs::write(path, content).expect("write a crash state");
            }
            Node::Dir {
                durable, pending, ..
            } => {
                let mut entries = durable.clone();
                if let Some(rng) = rng {
                    let keep = rng.gen_range(0..=pending.len());
                    for (_, change) in &pending[..keep] {
                        apply_entry_change(&mut entries, change);
                    }
                }
                std::fs::create_dir(path).expect("write a crash state");
                for (name, child) in entries {
                    self.write_node(child, &path.join(&name), rng);
                }
            }
        }
    }
}
