//! Debian's Chromium, headless, driven through `chromedriver` (WebDriver) with fantoccini.
//! Without the two programs the browser tests skip with a printed reason, unless `CI` is set:
//! there they must run, so a missing install fails the build instead of hiding it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::local::free_port;

/// The flags every test browser starts with: headless, and quiet on the (closed) network.
pub const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
];

/// One browser at a time: two cores do not run several Chromiums and gateways well.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A headless Chromium session; the driver is killed on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

impl Browser {
    /// Starts chromedriver on a free port and a fresh Chromium profile at 1280×800; `None`
    /// (after printing why) when Chromium or chromedriver is not installed and `CI` is unset.
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None).await
    }

    /// [`Browser::start`] emulating a phone: a viewport of `width` × `height` CSS pixels
    /// (desktop windows cannot be made that narrow).
    pub async fn phone(test: &str, width: u32, height: u32) -> Option<Self> {
        Self::start_with(test, Some((width, height))).await
    }

    async fn start_with(test: &str, phone: Option<(u32, u32)>) -> Option<Self> {
        let chromium = find_program(&["chromium", "chromium-browser"]);
        let driver = find_program(&["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let reason = "chromium or chromedriver is not installed \
                          (apt-get install chromium chromium-driver; .ci/run does)";
            if std::env::var_os("CI").is_some() {
                panic!("{test}: {reason}, and CI is set");
            }
            eprintln!("SKIPPED {test}: {reason}");
            return None;
        };
        let turn = ONE_AT_A_TIME.lock().await;
        let port = free_port();
        // Its own process group: on drop the whole group goes, Chromium included, even when
        // a failed test never closed the session.
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push("--window-size=1280,800".into());
        let mut caps = serde_json::Map::new();
        let mut options = json!({ "binary": chromium, "args": args });
        if let Some((width, height)) = phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "touch": true }
            });
        }
        caps.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::rustls()
            .expect("a TLS setup")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Some(Self {
            client,
            driver,
            _profile: profile,
            _turn: turn,
        })
    }

    /// Saves a PNG of the viewport, scrolled to the top, under
    /// `target/ui-screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) {
        self.run("window.scrollTo(0, 0); return true").await;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
    }

    /// Sizes the window so that the page's viewport is `width` × `height` CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize");
        let chrome = self
            .run("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]")
            .await;
        let extra = |i: usize| chrome[i].as_u64().unwrap_or(0) as u32;
        if extra(0) > 0 || extra(1) > 0 {
            self.client
                .set_window_size(width + extra(0), height + extra(1))
                .await
                .expect("resize");
        }
    }

    /// The text of the first element matching `css`, `None` while there is none.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// Waits until the first element matching `css` has text for which `check` holds; returns
    /// the time it took. Panics (with the last text seen) after `timeout`.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> Duration {
        let began = Instant::now();
        let mut last = None;
        loop {
            last = self.text(css).await.or(last);
            if last.as_deref().is_some_and(&check) {
                return began.elapsed();
            }
            assert!(
                began.elapsed() < timeout,
                "{css}: still {last:?} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Clicks the first element matching `css`. The live page may re-render between finding
    /// the element and clicking it (an event arrived): a stale element is found again.
    pub async fn click(&self, css: &str) {
        let began = Instant::now();
        loop {
            let clicked = self
                .client
                .wait()
                .at_most(Duration::from_secs(10))
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"))
                .click()
                .await;
            match clicked {
                Ok(_) => return,
                Err(e)
                    if e.to_string().contains("stale element")
                        && began.elapsed() < Duration::from_secs(10) =>
                {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Runs `script` in the page and returns its value.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Ends the session and the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.driver.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
