//! examples/deploy.sh and rollback.sh end to end, with a real nginx on 127.0.0.1.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

fn get(port: u16) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    let (head, body) = r.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(body.to_string())
}

/// Release `name` of the application "app", signed by the key `t/key` at `seq`.
fn release(t: &Path, name: &str, page: &str, seq: &str) -> std::path::PathBuf {
    let dir = t.join(name);
    sample(&dir, 2 << 20, 20);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), page).unwrap();
    let torrent = t.join(format!("{name}.torrent"));
    let key = t.join("key");
    publish(
        &dir,
        &torrent,
        &[
            "--name",
            "app",
            "--sign",
            key.to_str().unwrap(),
            "--seq",
            seq,
        ],
    );
    torrent
}

fn script(
    name: &str,
    t: &Path,
    env_args: &str,
    args: &[&str],
    reload: &str,
) -> std::process::Output {
    Command::new(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .env("SWARMFS", bin())
        .env("SWARMFS_RELEASES", t.join("releases"))
        .env("SWARMFS_CURRENT", t.join("current"))
        .env("SWARMFS_RELOAD", reload)
        .env("SWARMFS_MOUNT_ARGS", env_args)
        .env("SWARMFS_TRUST", t.join("key.pub"))
        .output()
        .unwrap()
}

#[test]
fn deploy_switches_nginx_atomically_and_rollback_returns() {
    require("nginx");
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let o = swarmfs(&["keygen", p.join("key").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let one = release(p, "one", "release one\n", "1");
    let two = release(p, "two", "release two\n", "2");
    let (p1, p2) = (free_port(), free_port());
    let _s1 = seed(&one, &p.join("one"), p1, &[]);
    let _s2 = seed(&two, &p.join("two"), p2, &[]);

    // nginx serving from the `current` symlink; workers are not root, hence --allow-other.
    let port = free_port();
    std::fs::create_dir_all(p.join("nginx/tmp")).unwrap();
    let conf = p.join("nginx/nginx.conf");
    let np = p.join("nginx");
    let n = np.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; pid {n}/nginx.pid; error_log {n}/error.log; worker_processes 1;\n\
             events {{}}\n\
             http {{ access_log off; client_body_temp_path {n}/tmp; proxy_temp_path {n}/tmp;\n\
               fastcgi_temp_path {n}/tmp; uwsgi_temp_path {n}/tmp; scgi_temp_path {n}/tmp;\n\
               server {{ listen 127.0.0.1:{port}; root {}/current/www; open_file_cache off; }} }}\n",
            p.display()
        ),
    )
    .unwrap();
    let mut nginx = Proc::spawn(Command::new("nginx").args([
        "-p",
        np.to_str().unwrap(),
        "-c",
        conf.to_str().unwrap(),
    ]));
    let reload = format!("nginx -p {n} -c {} -s reload", conf.display());
    let cache = p.join("cache");
    let margs = |peer: u16| {
        format!(
            "--allow-other --no-lsd --cache-dir {} --peer 127.0.0.1:{peer}",
            cache.display()
        )
    };

    let o = script(
        "deploy.sh",
        p,
        &margs(p1),
        &[
            "--wait",
            "www/index.html",
            "--wait",
            "bin/appserver",
            one.to_str().unwrap(),
        ],
        &reload,
    );
    assert!(
        o.status.success(),
        "deploy one: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(port).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx not serving: {:?}",
            get(port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(port).unwrap(), "release one\n");

    // Poll the page all through the second deploy: never an error, never anything else.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let poller = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                seen.lock().unwrap().push(get(port));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let o = script(
        "deploy.sh",
        p,
        &margs(p2),
        &["--prewarm", two.to_str().unwrap()],
        &reload,
    );
    assert!(
        o.status.success(),
        "deploy two: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(port).unwrap(), "release two\n");
    let o = script("rollback.sh", p, &margs(p1), &[], &reload);
    assert!(
        o.status.success(),
        "rollback: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    assert_eq!(get(port).unwrap(), "release one\n");
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 20, "too few polls: {}", seen.len());
    for r in seen.iter() {
        let body = r
            .as_ref()
            .unwrap_or_else(|e| panic!("a request failed during the switch: {e}"));
        assert!(
            body == "release one\n" || body == "release two\n",
            "half-deployed page: {body:?}"
        );
    }
    assert!(seen.iter().any(|r| r.as_deref() == Ok("release two\n")));

    // A release that is not signed by the trusted key is not deployed; nothing switches.
    let three = p.join("three");
    sample(&three, 1 << 20, 5);
    publish(&three, &p.join("three.torrent"), &["--name", "app"]);
    let o = script(
        "deploy.sh",
        p,
        &margs(p1),
        &[p.join("three.torrent").to_str().unwrap()],
        &reload,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("is not signed"),
        "{err}"
    );
    assert_eq!(get(port).unwrap(), "release one\n");
    let _ = nginx.child.kill();
    for e in std::fs::read_dir(p.join("releases")).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            let _ = swarmfs(&["unmount", path.to_str().unwrap()]);
        }
    }
}
