//! The namespace index: the watched trees as the change stream has described them so
//! far.
//!
//! Invariant: the index equals the namespace a consumer has after replaying every
//! record emitted so far. The reconciler compares it with the live filesystem to turn
//! fanotify's hints (which merge and lose order) into an exact sequence of name
//! operations, and the data path uses it to name the inode a kernel event reports.
//!
//! Nodes live in an arena addressed by [`NodeId`]; a directory keeps a map of its
//! children by name, and `by_key` maps each inode to the names it has in the trees
//! (several for hard links). Memory is about 150 bytes per entry.

use std::{
    collections::{HashMap, hash_map::Entry},
    ffi::OsStr,
    fs,
    os::unix::{
        ffi::{OsStrExt, OsStringExt},
        fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use agent_common::abi::{Key, kernel_dev};

/// Deepest tree the index walks; deeper paths cannot exist (PATH_MAX is 4096).
const MAX_DEPTH: usize = 4096;

/// Index of a node in the arena.
pub type NodeId = u32;

/// What [`Index::scan`] calls for each entry it adds: the index, the new node, what
/// the filesystem holds there and, for a symlink, its target.
pub type Found<'a> = dyn FnMut(&Index, NodeId, &Stat, Option<Vec<u8>>) + 'a;

/// Index of a watched root, in the order the roots were given.
pub type RootId = u16;

/// What an entry is, as far as replication cares.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Kind {
    Block,
    Char,
    Dir,
    Fifo,
    File,
    Socket,
    Symlink,
}

/// One entry of a watched tree.
#[derive(Debug)]
struct Node {
    /// The parent directory; `None` for a root.
    parent: Option<NodeId>,
    root: RootId,
    kind: Kind,
    key: Key,
    birth: u64,
    name: Box<[u8]>,
    /// Children by name; only directories have them.
    children: Option<HashMap<Box<[u8]>, NodeId>>,
}

/// A watched root: the directory as given by the operator and its identity.
#[derive(Clone, Debug)]
pub struct Root {
    /// The path as the operator gave it, used verbatim in the stream.
    pub given: PathBuf,
    /// The canonical absolute path, used to resolve paths.
    pub canonical: PathBuf,
    pub key: Key,
    /// The user-space `st_dev` of the root's filesystem.
    pub st_dev: u64,
    node: NodeId,
}

/// What the filesystem holds at a name, as seen by `lstat`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Stat {
    pub key: Key,
    pub kind: Kind,
    pub size: u64,
    pub nlink: u64,
    /// Birth time in nanoseconds (0 when the filesystem does not record it). Inode
    /// numbers are reused as soon as a file is deleted; the birth time tells a new
    /// file from an old one that had the same number.
    pub birth: u64,
    /// The device a character or block special file stands for (0 otherwise).
    pub rdev: u64,
}

/// The watched trees as last described.
#[derive(Debug, Default)]
pub struct Index {
    roots: Vec<Root>,
    nodes: Vec<Option<Node>>,
    free: Vec<NodeId>,
    /// Ids freed while ids are held ([`Index::hold`]): not reused until released.
    limbo: Vec<NodeId>,
    holding: bool,
    by_key: HashMap<Key, Names>,
    /// Directories a scan found under a new name while the index still has them at
    /// an old one (a move not reconciled yet): (old node, new parent, new name).
    /// A directory has one name, so the caller describes these as moves.
    displaced: Vec<(NodeId, NodeId, Box<[u8]>)>,
}

/// The names an inode has in the trees; almost always one.
#[derive(Debug)]
enum Names {
    One(NodeId),
    Many(Vec<NodeId>),
}

/// Errors of building the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read watched directory {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("watched directories {a} and {b} overlap")]
    Overlap { a: PathBuf, b: PathBuf },
    #[error("too many entries under the watched directories (more than {max})")]
    TooLarge { max: usize },
    #[error("the directory an entry was to be added to is no longer indexed")]
    StaleParent,
}

impl Index {
    /// Adds a watched root without scanning it; [`Index::scan`] fills it.
    pub fn add_root(&mut self, given: &Path) -> Result<RootId, IndexError> {
        let canonical = fs::canonicalize(given).map_err(|source| IndexError::Root {
            path: given.to_owned(),
            source,
        })?;
        let meta = fs::metadata(&canonical).map_err(|source| IndexError::Root {
            path: given.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(IndexError::NotADirectory {
                path: given.to_owned(),
            });
        }
        for other in &self.roots {
            if canonical.starts_with(&other.canonical) || other.canonical.starts_with(&canonical) {
                return Err(IndexError::Overlap {
                    a: other.given.clone(),
                    b: given.to_owned(),
                });
            }
        }
        let id = RootId::try_from(self.roots.len()).map_err(|_| IndexError::TooLarge {
            max: usize::from(RootId::MAX),
        })?;
        let key = Key {
            dev: kernel_dev(meta.dev()),
            ino: meta.ino(),
        };
        let node = self.alloc(Node {
            parent: None,
            root: id,
            kind: Kind::Dir,
            key,
            birth: 0,
            name: Box::from(&b""[..]),
            children: Some(HashMap::new()),
        })?;
        self.link_key(key, node);
        self.roots.push(Root {
            given: given.to_owned(),
            canonical,
            key,
            st_dev: meta.dev(),
            node,
        });
        Ok(id)
    }

    /// The watched roots.
    #[must_use]
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// The node of a root.
    #[must_use]
    pub fn root_node(&self, root: RootId) -> Option<NodeId> {
        self.roots.get(usize::from(root)).map(|r| r.node)
    }

    /// Walks the tree below `dir` on disk and adds everything found, calling `found`
    /// for each new node (parents before children) with, for a symlink, its target.
    /// Entries on other filesystems (mount points inside a watched tree) are skipped:
    /// capture cannot see them.
    ///
    /// A directory is opened through the path the index gives it, which is stale when
    /// it (or an ancestor) has moved in a way not reconciled yet; such directories are
    /// not read but returned, for the caller to list once their place is known. Once
    /// open, a directory is read, its entries looked at and its symlinks read through
    /// that one descriptor, so a move during the walk cannot mix two directories.
    pub fn scan(&mut self, dir: NodeId, found: &mut Found<'_>) -> Result<Vec<NodeId>, IndexError> {
        let mut unlisted = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Some(path) = self.abs_path(d) else {
                continue;
            };
            let (dev, key) = match self.node(d) {
                Some(n) => (n.key.dev, n.key),
                None => continue,
            };
            let Some(fd) = open_dir(&path).filter(|fd| {
                statx_fd(std::os::fd::AsRawFd::as_raw_fd(fd)).map(|s| s.key) == Some(key)
            }) else {
                unlisted.push(d);
                continue;
            };
            let Some(names) = list_fd(&fd) else {
                unlisted.push(d);
                continue;
            };
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            for name in names {
                let Some(st) = statx_at(raw, &name) else {
                    continue;
                };
                if st.key.dev != dev {
                    // `tandem config check` refuses such a mount; one made later is
                    // at least said.
                    tracing::warn!(
                        dir = %path.display(),
                        name = %String::from_utf8_lossy(&name),
                        "another filesystem is mounted inside a watched tree: its files are not captured or replicated"
                    );
                    continue;
                }
                if st.kind == Kind::Dir
                    && let Some(old) = self.dir_of(&st)
                    && !self.is_within(d, old)
                {
                    self.displaced.push((old, d, name.into_boxed_slice()));
                    continue;
                }
                let target = (st.kind == Kind::Symlink)
                    .then(|| nix::fcntl::readlinkat(&fd, OsStr::from_bytes(&name)).ok())
                    .flatten()
                    .map(std::ffi::OsString::into_vec);
                if st.kind == Kind::Symlink && target.is_none() {
                    // Gone from this name since it was looked at: the event of that
                    // rename or unlink describes it where it went (a symlink cannot be
                    // described without its target).
                    continue;
                }
                let id = self.insert(d, &name, &st)?;
                found(self, id, &st, target);
                if st.kind == Kind::Dir {
                    stack.push(id);
                }
            }
        }
        Ok(unlisted)
    }

    /// Adds `name` under directory `dir`, replacing nothing: the caller removes a
    /// previous entry of that name first.
    pub fn insert(&mut self, dir: NodeId, name: &[u8], st: &Stat) -> Result<NodeId, IndexError> {
        let root = match self.node(dir) {
            Some(n) if n.kind == Kind::Dir => n.root,
            _ => return Err(IndexError::StaleParent),
        };
        let id = self.alloc(Node {
            parent: Some(dir),
            root,
            kind: st.kind,
            key: st.key,
            birth: st.birth,
            name: Box::from(name),
            children: (st.kind == Kind::Dir).then(HashMap::new),
        })?;
        if let Some(old) = self
            .node_mut(dir)
            .and_then(|n| n.children.as_mut())
            .and_then(|c| c.insert(Box::from(name), id))
        {
            // The caller should have removed it; keep the index consistent anyway.
            self.drop_subtree(old);
        }
        self.link_key(st.key, id);
        Ok(id)
    }

    /// Removes a node and everything below it.
    pub fn remove(&mut self, id: NodeId) {
        if let Some((parent, name)) = self
            .node(id)
            .and_then(|n| Some((n.parent?, n.name.clone())))
            && let Some(children) = self.node_mut(parent).and_then(|n| n.children.as_mut())
            && children.get(&name) == Some(&id)
        {
            children.remove(&name);
        }
        self.drop_subtree(id);
    }

    /// Moves a node to `name` under `dir`; whatever had that name is removed.
    pub fn rename(&mut self, id: NodeId, dir: NodeId, name: &[u8]) {
        if self.is_within(dir, id) {
            // A directory cannot move below itself; callers order moves so that this
            // never happens, and a bug must not turn the tree into a cycle.
            return;
        }
        if let Some(old) = self.child(dir, name)
            && old != id
        {
            self.remove(old);
        }
        if let Some((parent, old_name)) = self
            .node(id)
            .and_then(|n| Some((n.parent?, n.name.clone())))
            && let Some(children) = self.node_mut(parent).and_then(|n| n.children.as_mut())
        {
            children.remove(&old_name);
        }
        let root = self.node(dir).map_or(0, |n| n.root);
        if let Some(n) = self.node_mut(id) {
            n.parent = Some(dir);
            n.name = Box::from(name);
            n.root = root;
        }
        if let Some(children) = self.node_mut(dir).and_then(|n| n.children.as_mut()) {
            children.insert(Box::from(name), id);
        }
        // A directory moved across roots takes its subtree along.
        self.set_root(id, root);
    }

    /// The child called `name` of directory `dir`.
    #[must_use]
    pub fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.node(dir)?.children.as_ref()?.get(name).copied()
    }

    /// The children of a directory.
    #[must_use]
    pub fn children(&self, dir: NodeId) -> Vec<NodeId> {
        self.node(dir)
            .and_then(|n| n.children.as_ref())
            .map(|c| c.values().copied().collect())
            .unwrap_or_default()
    }

    /// The names of an inode in the trees.
    #[must_use]
    pub fn names(&self, key: &Key) -> &[NodeId] {
        match self.by_key.get(key) {
            Some(Names::One(id)) => std::slice::from_ref(id),
            Some(Names::Many(ids)) => ids,
            None => &[],
        }
    }

    /// The directory node `st` describes, if it is a watched directory: same inode
    /// number and (where recorded) same birth time, so that a new directory that
    /// reuses a deleted one's number is not taken for it.
    #[must_use]
    pub fn dir_of(&self, st: &Stat) -> Option<NodeId> {
        self.names(&st.key)
            .iter()
            .copied()
            .find(|&id| self.kind(id) == Some(Kind::Dir) && self.is_same_file(id, st))
    }

    /// The directory node of an inode, if it is a watched directory.
    #[must_use]
    pub fn dir_by_key(&self, key: &Key) -> Option<NodeId> {
        self.names(key)
            .iter()
            .copied()
            .find(|&id| self.kind(id) == Some(Kind::Dir))
    }

    #[must_use]
    pub fn kind(&self, id: NodeId) -> Option<Kind> {
        self.node(id).map(|n| n.kind)
    }

    #[must_use]
    pub fn key(&self, id: NodeId) -> Option<Key> {
        self.node(id).map(|n| n.key)
    }

    /// What the index knows of a node, as a [`Stat`] (size and device unknown).
    #[must_use]
    pub fn stat(&self, id: NodeId) -> Option<Stat> {
        let n = self.node(id)?;
        Some(Stat {
            key: n.key,
            kind: n.kind,
            size: 0,
            nlink: 1,
            birth: n.birth,
            rdev: 0,
        })
    }

    /// Whether the node is the file `st` describes: same inode number and, where the
    /// filesystem records birth times, born at the same time (not a reused number).
    #[must_use]
    pub fn is_same_file(&self, id: NodeId, st: &Stat) -> bool {
        self.node(id).is_some_and(|n| {
            n.key == st.key
                && n.kind == st.kind
                && (n.birth == 0 || st.birth == 0 || n.birth == st.birth)
        })
    }

    #[must_use]
    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        self.node(id)?.parent
    }

    #[must_use]
    pub fn name(&self, id: NodeId) -> Option<&[u8]> {
        self.node(id).map(|n| &*n.name)
    }

    #[must_use]
    pub fn root_of(&self, id: NodeId) -> Option<RootId> {
        self.node(id).map(|n| n.root)
    }

    /// The path of a node relative to its root, as raw bytes (`""` for the root).
    #[must_use]
    pub fn rel_path(&self, id: NodeId) -> Option<Vec<u8>> {
        let mut parts = Vec::new();
        let mut cur = id;
        loop {
            // The index is a tree by construction; the bound turns a bug into a
            // missing path instead of a hang.
            if parts.len() > MAX_DEPTH {
                return None;
            }
            let n = self.node(cur)?;
            match n.parent {
                Some(p) => {
                    parts.push(&*n.name);
                    cur = p;
                }
                None => break,
            }
        }
        let mut out = Vec::new();
        for (i, part) in parts.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(part);
        }
        Some(out)
    }

    /// The absolute path of a node, through the root's canonical path.
    #[must_use]
    pub fn abs_path(&self, id: NodeId) -> Option<PathBuf> {
        let root = self.roots.get(usize::from(self.node(id)?.root))?;
        let rel = self.rel_path(id)?;
        if rel.is_empty() {
            return Some(root.canonical.clone());
        }
        Some(root.canonical.join(OsStr::from_bytes(&rel)))
    }

    /// The node at an absolute path, walking the index's names (not the disk).
    #[must_use]
    pub fn lookup(&self, abs: &Path) -> Option<NodeId> {
        use std::path::Component;
        let root = self.roots.iter().find(|r| abs.starts_with(&r.canonical))?;
        let rel = abs.strip_prefix(&root.canonical).ok()?;
        let mut node = root.node;
        for c in rel.components() {
            match c {
                Component::Normal(name) => node = self.child(node, name.as_bytes())?,
                Component::CurDir => {}
                _ => return None,
            }
        }
        Some(node)
    }

    /// The node at a path relative to a root.
    #[must_use]
    pub fn lookup_rel(&self, root: RootId, rel: &[u8]) -> Option<NodeId> {
        let mut node = self.root_node(root)?;
        for part in rel.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            node = self.child(node, part)?;
        }
        Some(node)
    }

    /// Whether `id` is `ancestor` or lies below it.
    #[must_use]
    pub fn is_within(&self, id: NodeId, ancestor: NodeId) -> bool {
        let mut cur = Some(id);
        let mut depth = 0;
        while let Some(c) = cur {
            depth += 1;
            if depth > MAX_DEPTH {
                return false;
            }
            if c == ancestor {
                return true;
            }
            cur = self.parent(c);
        }
        false
    }

    /// The directories the last scans found moved (see the field's doc).
    pub fn take_displaced(&mut self) -> Vec<(NodeId, NodeId, Box<[u8]>)> {
        std::mem::take(&mut self.displaced)
    }

    /// Keeps freed ids from being reused until [`Index::release`], so that ids taken
    /// before a batch of changes never come to name another entry during it (a
    /// stale id then names nothing).
    pub fn hold(&mut self) {
        self.holding = true;
    }

    /// Makes the ids freed since [`Index::hold`] reusable again.
    pub fn release(&mut self) {
        self.holding = false;
        self.free.append(&mut self.limbo);
    }

    /// Number of entries, roots included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len() - self.free.len() - self.limbo.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize)?.as_ref()
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id as usize)?.as_mut()
    }

    fn alloc(&mut self, node: Node) -> Result<NodeId, IndexError> {
        if let Some(id) = self.free.pop() {
            self.nodes[id as usize] = Some(node);
            return Ok(id);
        }
        let id = NodeId::try_from(self.nodes.len()).map_err(|_| IndexError::TooLarge {
            max: NodeId::MAX as usize,
        })?;
        self.nodes.push(Some(node));
        Ok(id)
    }

    fn set_root(&mut self, id: NodeId, root: RootId) {
        let mut stack = vec![id];
        while let Some(c) = stack.pop() {
            if let Some(n) = self.node_mut(c) {
                n.root = root;
                if let Some(ch) = &n.children {
                    stack.extend(ch.values().copied());
                }
            }
        }
    }

    fn drop_subtree(&mut self, id: NodeId) {
        let mut stack = vec![id];
        while let Some(c) = stack.pop() {
            let Some(node) = self.nodes.get_mut(c as usize).and_then(Option::take) else {
                continue;
            };
            if let Some(ch) = node.children {
                stack.extend(ch.into_values());
            }
            self.unlink_key(node.key, c);
            if self.holding {
                self.limbo.push(c);
            } else {
                self.free.push(c);
            }
        }
    }

    fn link_key(&mut self, key: Key, id: NodeId) {
        match self.by_key.entry(key) {
            Entry::Vacant(v) => {
                v.insert(Names::One(id));
            }
            Entry::Occupied(mut o) => {
                let names = o.get_mut();
                match names {
                    Names::One(first) => *names = Names::Many(vec![*first, id]),
                    Names::Many(ids) => ids.push(id),
                }
            }
        }
    }

    fn unlink_key(&mut self, key: Key, id: NodeId) {
        if let Entry::Occupied(mut o) = self.by_key.entry(key) {
            match o.get_mut() {
                Names::One(only) if *only == id => {
                    o.remove();
                }
                Names::One(_) => {}
                Names::Many(ids) => {
                    ids.retain(|&x| x != id);
                    if let [only] = ids[..] {
                        *o.get_mut() = Names::One(only);
                    } else if ids.is_empty() {
                        o.remove();
                    }
                }
            }
        }
    }
}

/// Opens a directory for reading without following a final symlink.
fn open_dir(path: &Path) -> Option<std::os::fd::OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
}

/// The names in an open directory (without `.` and `..`). Read through
/// `/proc/self/fd`, which reopens this very directory wherever it is now.
pub fn list_fd(fd: &std::os::fd::OwnedFd) -> Option<Vec<Vec<u8>>> {
    let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
    let entries = fs::read_dir(format!("/proc/self/fd/{raw}")).ok()?;
    Some(
        entries
            .flatten()
            .map(|e| e.file_name().into_vec())
            .collect(),
    )
}

/// The replication-relevant facts of an `lstat` result.
#[must_use]
pub fn stat_of(meta: &fs::Metadata) -> Stat {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_socket() {
        Kind::Socket
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else {
        Kind::File
    };
    Stat {
        key: Key {
            dev: kernel_dev(meta.dev()),
            ino: meta.ino(),
        },
        kind,
        size: meta.len(),
        nlink: meta.nlink(),
        rdev: meta.rdev(),
        birth: meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(0)),
    }
}

/// `statx(2)` of `name` relative to directory `dirfd` (or `AT_FDCWD`), without
/// following a final symlink. `None` when the name does not exist.
#[must_use]
pub fn statx_at(dirfd: std::os::fd::RawFd, name: &[u8]) -> Option<Stat> {
    statx_flags(dirfd, name, libc::AT_SYMLINK_NOFOLLOW)
}

/// `statx(2)` of an open descriptor itself.
#[must_use]
pub fn statx_fd(fd: std::os::fd::RawFd) -> Option<Stat> {
    statx_flags(fd, b"", libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

fn statx_flags(dirfd: std::os::fd::RawFd, name: &[u8], flags: libc::c_int) -> Option<Stat> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: cname is a valid NUL-terminated string and stx points to writable
    // memory of the size statx expects; the kernel fills it on success.
    let rc = unsafe {
        libc::statx(
            dirfd,
            cname.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: statx returned 0, so the structure is initialised (and it was zeroed).
    let stx = unsafe { stx.assume_init() };
    let kind = match u32::from(stx.stx_mode) & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFSOCK => Kind::Socket,
        libc::S_IFCHR => Kind::Char,
        libc::S_IFBLK => Kind::Block,
        _ => Kind::File,
    };
    let st_dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    let birth = if stx.stx_mask & libc::STATX_BTIME != 0 {
        u64::try_from(stx.stx_btime.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(stx.stx_btime.tv_nsec))
    } else {
        0
    };
    Some(Stat {
        key: Key {
            dev: kernel_dev(st_dev),
            ino: stx.stx_ino,
        },
        kind,
        size: stx.stx_size,
        nlink: u64::from(stx.stx_nlink),
        rdev: libc::makedev(stx.stx_rdev_major, stx.stx_rdev_minor),
        birth,
    })
}

impl Kind {
    /// The name used in the change stream.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Char => "char",
            Self::Dir => "dir",
            Self::Fifo => "fifo",
            Self::File => "file",
            Self::Socket => "socket",
            Self::Symlink => "symlink",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn scan_all(index: &mut Index, root: RootId) -> Vec<Vec<u8>> {
        let node = index.root_node(root).unwrap();
        let mut seen = Vec::new();
        index
            .scan(node, &mut |ix, id, _, _| {
                seen.push(ix.rel_path(id).unwrap())
            })
            .unwrap();
        seen.sort();
        seen
    }

    #[test]
    fn scan_finds_every_entry_with_paths_relative_to_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        fs::write(tmp.path().join("a/b/f"), b"x").unwrap();
        fs::hard_link(tmp.path().join("a/b/f"), tmp.path().join("g")).unwrap();
        symlink("a/b/f", tmp.path().join("s")).unwrap();
        let mut index = Index::default();
        let root = index.add_root(tmp.path()).unwrap();
        let seen = scan_all(&mut index, root);
        assert_eq!(
            seen,
            vec![
                b"a".to_vec(),
                b"a/b".to_vec(),
                b"a/b/f".to_vec(),
                b"g".to_vec(),
                b"s".to_vec()
            ]
        );
        let f = index
            .child(
                index.child(index.child(0, b"a").unwrap(), b"b").unwrap(),
                b"f",
            )
            .unwrap();
        let key = index.key(f).unwrap();
        assert_eq!(index.names(&key).len(), 2, "hard links share a key");
        assert_eq!(
            index.kind(index.child(0, b"s").unwrap()),
            Some(Kind::Symlink)
        );
    }

    #[test]
    fn rename_and_remove_keep_the_maps_consistent() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("d/e")).unwrap();
        fs::write(tmp.path().join("d/e/f"), b"x").unwrap();
        fs::write(tmp.path().join("t"), b"y").unwrap();
        let mut index = Index::default();
        let root = index.add_root(tmp.path()).unwrap();
        scan_all(&mut index, root);
        let rootn = index.root_node(root).unwrap();
        let d = index.child(rootn, b"d").unwrap();
        let t = index.child(rootn, b"t").unwrap();
        let t_key = index.key(t).unwrap();
        // Rename d over t: t is gone, d's subtree follows.
        index.rename(d, rootn, b"t");
        assert!(index.names(&t_key).is_empty());
        let e = index
            .child(index.child(rootn, b"t").unwrap(), b"e")
            .unwrap();
        let f = index.child(e, b"f").unwrap();
        assert_eq!(index.rel_path(f).unwrap(), b"t/e/f");
        assert_eq!(index.len(), 4);
        index.remove(index.child(rootn, b"t").unwrap());
        assert_eq!(index.len(), 1);
        assert!(index.children(rootn).is_empty());
    }

    #[test]
    fn overlapping_roots_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        let mut index = Index::default();
        index.add_root(&tmp.path().join("a")).unwrap();
        let err = index.add_root(&tmp.path().join("a/b")).unwrap_err();
        assert!(matches!(err, IndexError::Overlap { .. }), "{err}");
        assert!(matches!(
            index.add_root(&tmp.path().join("missing")),
            Err(IndexError::Root { .. })
        ));
    }
}
