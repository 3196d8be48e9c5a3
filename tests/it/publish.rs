//! `swarmfs publish`: determinism, BEP 47 layout, refusals that name the bad input.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use swarmfs::release::{EntryKind, Release};

use crate::support::*;

/// Copies `src` to `dst` creating entries in reverse order, with other mtimes and modes
/// that differ only in bits a torrent does not carry.
fn copy_reversed(src: &Path, dst: &Path) {
    let mut entries: Vec<_> = snapshot(src).into_keys().collect();
    entries.reverse();
    std::fs::create_dir_all(dst).unwrap();
    for rel in entries {
        let from = src.join(&rel);
        let to = dst.join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let md = std::fs::symlink_metadata(&from).unwrap();
        if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else if md.is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(&from, &to).unwrap();
            let exec = md.permissions().mode() & 0o111 != 0;
            let mode = if exec { 0o700 } else { 0o600 };
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
            let f = std::fs::File::options().write(true).open(&to).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
                .unwrap();
        }
    }
}

#[test]
fn same_tree_gives_same_torrent_whatever_order_and_mtimes() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a/release");
    let b = t.path().join("b/release");
    sample(&a, 3 << 20, 60);
    copy_reversed(&a, &b);
    assert_eq!(snapshot(&a).len(), snapshot(&b).len());
    let ta = t.path().join("a.torrent");
    let tb = t.path().join("b.torrent");
    let ih_a = publish(&a, &ta, &["--tracker", "http://127.0.0.1:1/announce"]);
    let ih_b = publish(&b, &tb, &["--tracker", "http://127.0.0.1:1/announce"]);
    assert_eq!(ih_a, ih_b);
    assert_eq!(std::fs::read(&ta).unwrap(), std::fs::read(&tb).unwrap());
    // A changed byte changes the infohash: the test above can fail.
    std::fs::write(b.join("config/app.yaml"), b"changed").unwrap();
    assert_ne!(publish(&b, &tb, &[]), ih_a);
}

#[test]
fn layout_attributes_and_symlinks_follow_bep47() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, 4 << 20, 40);
    let out = t.path().join("rel.torrent");
    let o = swarmfs(&[
        "publish",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--piece-size",
        "64K",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rel = Release::from_torrent(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(json["infohash"], rel.info_hash.to_string());
    assert!(json["magnet"]
        .as_str()
        .unwrap()
        .starts_with(&format!("magnet:?xt=urn:btih:{}", rel.info_hash)));
    assert_eq!(rel.piece_length, 64 * 1024);

    let by_path = |p: &str| {
        rel.entries
            .iter()
            .find(|e| e.display_path() == p)
            .unwrap_or_else(|| panic!("{p} not in torrent"))
    };
    assert_eq!(
        by_path("bin/appserver").kind,
        EntryKind::File { executable: true }
    );
    assert_eq!(
        by_path("bin/start.sh").kind,
        EntryKind::File { executable: true }
    );
    assert_eq!(
        by_path("config/app.yaml").kind,
        EntryKind::File { executable: false }
    );
    assert_eq!(by_path("config/empty.conf").length, 0);
    assert_eq!(
        by_path("config/current.yaml").kind,
        EntryKind::Symlink {
            target: vec!["config".into(), "app.yaml".into()]
        }
    );
    assert_eq!(
        by_path("static/js/templates").kind,
        EntryKind::Symlink {
            target: vec!["templates".into()]
        }
    );
    // Files of a piece or more start on a piece boundary and nothing shares their last piece.
    let data: Vec<_> = rel
        .entries
        .iter()
        .filter(|e| !e.is_padding() && e.length > 0)
        .collect();
    for (i, e) in data.iter().enumerate() {
        if e.length >= rel.piece_length {
            assert_eq!(
                e.offset % rel.piece_length,
                0,
                "{} not aligned",
                e.display_path()
            );
            if let Some(next) = data.get(i + 1) {
                assert_eq!(
                    next.offset % rel.piece_length,
                    0,
                    "{} shares a piece",
                    next.display_path()
                );
            }
        }
    }
    // Every file carries its whole-file SHA-1, and it is right.
    for e in rel
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
    {
        let bytes = std::fs::read(dir.join(e.display_path())).unwrap();
        assert_eq!(
            hex::encode(e.sha1.unwrap()),
            sha1_hex(&bytes),
            "{}",
            e.display_path()
        );
    }
    // Entries are in sorted order.
    let paths: Vec<_> = rel.visible_entries().map(|e| e.path.clone()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
}

#[test]
fn publish_never_modifies_the_directory() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, 2 << 20, 20);
    let before = snapshot(&dir);
    publish(&dir, &t.path().join("x.torrent"), &[]);
    assert_eq!(before, snapshot(&dir));
    // Writing the torrent inside the release is refused.
    let inside = dir.join("rel.torrent");
    let o = swarmfs(&[
        "publish",
        dir.to_str().unwrap(),
        "--out",
        inside.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("inside the release directory"),
        "{}",
        stderr(&o)
    );
    assert_eq!(before, snapshot(&dir));
}

/// Publishing `dir` fails, names `needle`, and writes no torrent.
fn assert_refused(dir: &Path, needle: &str) {
    let out = dir.parent().unwrap().join("refused.torrent");
    let o = swarmfs(&[
        "publish",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "publish of {} succeeded",
        dir.display()
    );
    assert!(
        err.contains(needle),
        "error does not name {needle:?}: {err}"
    );
    assert!(!out.exists(), "a torrent was written despite the error");
}

#[test]
fn bad_trees_are_refused_naming_the_path() {
    let t = tempfile::tempdir().unwrap();
    let mk = |name: &str| {
        let d = t.path().join(name);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/ok.txt"), b"data").unwrap();
        d
    };
    assert_refused(&t.path().join("missing"), "missing: no such directory");

    let file = t.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    assert_refused(&file, "not a directory");

    let empty = t.path().join("empty");
    std::fs::create_dir_all(empty.join("a/b")).unwrap();
    std::fs::write(empty.join("a/zero"), b"").unwrap();
    assert_refused(&empty, "the release is empty");

    let d = mk("abs");
    std::os::unix::fs::symlink("/etc/passwd", d.join("sub/link")).unwrap();
    assert_refused(&d, "sub/link: symlink target \"/etc/passwd\" is absolute");

    let d = mk("escape");
    std::os::unix::fs::symlink("../../outside", d.join("sub/link")).unwrap();
    assert_refused(
        &d,
        "sub/link: symlink target \"../../outside\" leaves the release",
    );

    let d = mk("fifo");
    let c = std::ffi::CString::new(d.join("sub/pipe").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    assert_refused(&d, "sub/pipe: a FIFO cannot be published");

    let d = mk("socket");
    let _l = std::os::unix::net::UnixListener::bind(d.join("sub/sock")).unwrap();
    assert_refused(&d, "sub/sock: a socket cannot be published");

    let d = mk("nonutf8");
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"bad\xffname");
    std::fs::write(d.join("sub").join(bad), b"x").unwrap();
    assert_refused(&d, "name is not valid UTF-8");

    let d = mk("piece");
    let o = swarmfs(&["publish", d.to_str().unwrap(), "--piece-size", "1000"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("piece size 1000 is not a power of two"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn empty_directories_are_named_in_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("rel");
    std::fs::create_dir_all(d.join("logs/old")).unwrap();
    std::fs::write(d.join("app.py"), b"print(1)").unwrap();
    let o = swarmfs(&[
        "publish",
        d.to_str().unwrap(),
        "--out",
        t.path().join("r.torrent").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("empty directory \"logs/old\""),
        "{}",
        stderr(&o)
    );
}
