//! Headless Chromium through chromedriver (WebDriver, `fantoccini`) for
//! the dashboard tests: one browser at a time per test binary, its whole
//! process group killed on drop; helpers to open a page, wait for a
//! condition, read console errors, click and take screenshots.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page gets to show what a step waits for; generous because
/// CI has two cores shared by the node, the browser and other tests.
pub const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// chromedriver in its own process group, with the Chromium it starts;
/// the whole group is SIGKILLed on drop (killing chromedriver alone leaves
/// the browser running).
pub struct Browser {
    /// One browser at a time in this binary: three Chromiums on a two-core
    /// CI machine make every page slow and every timeout flaky.
    _turn: tokio::sync::MutexGuard<'static, ()>,
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> anyhow::Result<Browser> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(bin).exists() {
                bail!("{bin} is missing: apt-get install -y chromium chromium-driver (./scripts/test.sh does)");
            }
        }
        static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let turn = TURN.lock().await;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start chromedriver")?;
        let profile = tempfile::tempdir()?;
        let mut browser = Browser {
            _turn: turn,
            driver,
            client: None,
            _profile: profile,
        };
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => {
                    browser.client = Some(c);
                    return Ok(browser);
                }
                Err(e) if Instant::now() > deadline => bail!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Opens `url` (a full page load).
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.c().goto(url).await?;
        self.wait("the app mounted", "return document.querySelector('main h1') !== null")
            .await
    }

    /// Polls `script` (a JS function body returning a truthy value when
    /// ready) until it holds.
    pub async fn wait(&self, what: &str, script: &str) -> anyhow::Result<()> {
        self.wait_value(what, script).await.map(|_| ())
    }

    pub async fn wait_value(&self, what: &str, script: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            let v = self.c().execute(script, vec![]).await?;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                let text = self
                    .c()
                    .execute("return document.body.innerText", vec![])
                    .await
                    .unwrap_or_default();
                let errors = self.console_errors().await.unwrap_or_default();
                bail!("timed out waiting for {what}; console errors: {errors:?}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Errors the page recorded (uncaught errors, `console.error`).
    pub async fn console_errors(&self) -> anyhow::Result<Vec<String>> {
        let v = self
            .c()
            .execute("return window.__waybillErrors || ['no error hook']", vec![])
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// A marker in `window` that a full page load would erase.
    pub async fn mark_page(&self) -> anyhow::Result<()> {
        self.c()
            .execute("window.__sameLoad = true; return true", vec![])
            .await?;
        Ok(())
    }

    pub async fn assert_same_page(&self) -> anyhow::Result<()> {
        let v = self.c().execute("return window.__sameLoad === true", vec![]).await?;
        anyhow::ensure!(v == json!(true), "the page was reloaded");
        Ok(())
    }

    pub async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let png = self.c().screenshot().await?;
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.png")), png)?;
        Ok(())
    }

    /// Sets the page's viewport (CSS pixels) to `width` × `height`: the
    /// window is resized, then corrected by what the page reports, since
    /// the window's frame is not part of the viewport.
    pub async fn viewport(&self, width: u32, height: u32) -> anyhow::Result<()> {
        let (mut w, mut h) = (width, height);
        for _ in 0..3 {
            self.c().set_window_size(w, h).await?;
            let v = self
                .c()
                .execute("return [window.innerWidth, window.innerHeight]", vec![])
                .await?;
            let (iw, ih) = (v[0].as_u64().unwrap_or(0) as i64, v[1].as_u64().unwrap_or(0) as i64);
            if iw == i64::from(width) && ih == i64::from(height) {
                return Ok(());
            }
            w = (i64::from(w) + i64::from(width) - iw).max(100) as u32;
            h = (i64::from(h) + i64::from(height) - ih).max(100) as u32;
        }
        let v = self
            .c()
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await?;
        bail!("could not set the viewport to {width}x{height}: it is {v}")
    }

    /// How many CSS pixels the document is wider than the viewport (0 when
    /// nothing scrolls horizontally), and the widest elements that stick
    /// out, for the failure message.
    pub async fn horizontal_overflow(&self) -> anyhow::Result<(i64, String)> {
        let v = self
            .c()
            .execute(
                "const vw = document.documentElement.clientWidth;
                 const over = document.documentElement.scrollWidth - vw;
                 const wide = [...document.querySelectorAll('body *')]
                   .filter(e => e.getBoundingClientRect().right > vw + 1)
                   .slice(0, 5)
                   .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')
                        + ' right=' + Math.round(e.getBoundingClientRect().right));
                 return [over, wide.join(', ')];",
                vec![],
            )
            .await?;
        Ok((v[0].as_i64().unwrap_or(0), v[1].as_str().unwrap_or("").to_string()))
    }

    /// Fails when the page scrolls horizontally, naming what sticks out.
    pub async fn assert_no_horizontal_scroll(&self, page: &str) -> anyhow::Result<()> {
        let (over, wide) = self.horizontal_overflow().await?;
        anyhow::ensure!(
            over <= 0,
            "{page}: the document is {over} px wider than the viewport ({wide})"
        );
        Ok(())
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.c().find(Locator::Css(css)).await?.click().await?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session's browser is a child of chromedriver, in its group.
        // `-s KILL --` matters: procps-ng 4.0.2 turns `kill -9 -PGID` into
        // kill(-1, SIGKILL), every process the user may signal.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `<target>/screenshots` (the cargo target dir this test was built in).
pub fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("screenshots"))
        .unwrap_or_else(|| PathBuf::from("target/screenshots"))
}

pub fn ui_built() -> anyhow::Result<()> {
    let index = Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend/dist/index.html");
    anyhow::ensure!(
        index.is_file(),
        "{} is missing: build the dashboard first (cargo run -p xtask -- dashboard)",
        index.display()
    );
    Ok(())
}
