//! The dashboard in a real browser: Debian's Chromium, headless, through chromedriver,
//! against the `autodeploy` binary on the simulated provider. Each test saves screenshots
//! under `target/ui-screenshots/`. Without Chromium the tests skip (they fail when `CI` is
//! set).

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use browser::Browser;
use fantoccini::Locator;
use support::binary::{GatewayProcess, wait_until_serving};
use support::local::free_port;

const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const TOKEN: &str = "ui-test-token-0123456789";

/// Writes a config for the binary: three deployments on the simulated provider (booting in
/// 300 ms): `chat` (standby), `warm` (a warm pool of one: running) and `odd` (a hostile
/// name and description).
fn write_config(dir: &Path, port: u16, admin_token: Option<&str>) -> PathBuf {
    let token = admin_token
        .map(|t| format!("admin_token = \"{t}\""))
        .unwrap_or_default();
    let config = format!(
        r#"
[gateway]
listen = "127.0.0.1:{port}"
drain_timeout = "2s"
{token}

[providers.simulated]
boot_time = "300ms"

[[deployment]]
id = "chat"
name = "Chat model"
description = "A 7B chat model on one RTX 4090"
provider = "simulated"
start_command = "simulated"
idle_retention = "10m"
max_instances = 2
price_per_hour = 0.69

[[deployment]]
id = "warm"
name = "Embeddings"
provider = "simulated"
start_command = "simulated"
idle_retention = "10m"
max_instances = 3
min_instances = 1
price_per_hour = 0.35

[[deployment]]
id = "odd"
name = "<b>not bold</b>"
description = "{HOSTILE}"
provider = "simulated"
start_command = "simulated"
idle_retention = "10m"
max_instances = 1
"#
    );
    let path = dir.join("autodeploy.toml");
    std::fs::write(&path, config).expect("write the config");
    path
}

/// The binary serving `config` on `port`, once it answers.
async fn gateway(config: &Path, port: u16) -> GatewayProcess {
    let process = GatewayProcess::spawn(config, Stdio::null());
    tokio::task::spawn_blocking(move || wait_until_serving(port))
        .await
        .expect("the wait");
    process
}

/// Stops the binary with SIGTERM and waits for it to exit.
async fn stop(mut process: GatewayProcess) {
    let mut child = process.take();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("the wait")
        .expect("the gateway exits");
}

/// A gateway and a browser on its dashboard (`path` after `/ui/`); `None` when skipped.
async fn open(
    test: &str,
    admin_token: Option<&str>,
    path: &str,
) -> Option<(Browser, GatewayProcess, u16, tempfile::TempDir)> {
    let browser = Browser::start(test).await?;
    browser.resize(1280, 800).await;
    open_in(browser, admin_token, path).await
}

async fn open_in(
    browser: Browser,
    admin_token: Option<&str>,
    path: &str,
) -> Option<(Browser, GatewayProcess, u16, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, admin_token);
    let process = gateway(&config, port).await;
    browser
        .client
        .goto(&format!("http://127.0.0.1:{port}/ui/{path}"))
        .await
        .expect("the page loads");
    Some((browser, process, port, dir))
}

const SOON: Duration = Duration::from_secs(10);

fn badge(deployment: &str) -> String {
    format!("tr[data-deployment=\"{deployment}\"] .badge")
}

#[tokio::test]
async fn the_overview_lists_every_deployment_with_its_badge() {
    let Some((browser, process, _, _dir)) = open("overview", None, "").await else {
        return;
    };
    browser
        .wait_text(&badge("chat"), SOON, |t| t == "Standby")
        .await;
    browser
        .wait_text(&badge("warm"), SOON, |t| t == "Running")
        .await;
    browser
        .wait_text(&badge("odd"), SOON, |t| t == "Standby")
        .await;
    let banner = browser.text("#banner").await.unwrap_or_default();
    assert!(banner.contains("The API is open"), "{banner}");
    let row = browser
        .text("tr[data-deployment=\"warm\"]")
        .await
        .unwrap_or_default();
    assert!(row.contains("1 / 3"), "instances live / max: {row}");
    // The Running tile follows the badges (status events update both).
    browser
        .wait_text("[data-tile=\"Running\"] .tile-value", SOON, |t| t == "1")
        .await;
    browser
        .wait_text("#connection", SOON, |t| t == "live")
        .await;
    browser.screenshot("overview-1280x800").await;
    browser.close().await;
    stop(process).await;
}

#[tokio::test]
async fn prewarm_turns_standby_to_running_within_2s_without_reload_and_release_turns_it_back() {
    let Some((browser, process, port, _dir)) = open("prewarm", None, "#/d/chat").await else {
        return;
    };
    let head_badge = ".deployment-head .badge";
    browser
        .wait_text(head_badge, SOON, |t| t == "Standby")
        .await;
    browser
        .wait_text("#connection", SOON, |t| t == "live")
        .await;
    // Set in the page: a reload would lose it.
    browser.run("window.notReloaded = true; return true").await;
    browser.click("#prewarm").await;
    let took = browser
        .wait_text(head_badge, Duration::from_secs(2), |t| t == "Running")
        .await;
    eprintln!("pre-warm to Running on the page: {took:?}");
    assert_eq!(
        browser.run("return window.notReloaded === true").await,
        true,
        "the page was reloaded"
    );
    browser
        .wait_text("tr[data-instance] .state", SOON, |t| t == "ready")
        .await;
    // Some traffic for the chart, the rate and the served counts.
    tokio::task::spawn_blocking(move || {
        for _ in 0..30 {
            assert_eq!(support::binary::status(port, "/d/chat/", None), 200);
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    browser
        .wait_text("tr[data-instance] td[data-label=\"Served\"]", SOON, |t| {
            t == "30"
        })
        .await;
    // Its last log lines on demand, as text.
    browser.click("tr[data-instance] .row-actions button").await;
    browser.wait_text("pre.log", SOON, |t| !t.is_empty()).await;
    // The try-it box follows the chosen rule.
    let rule = browser.client.find(Locator::Css("#rule")).await.unwrap();
    rule.select_by_value("scale-out").await.unwrap();
    browser
        .wait_text("#curl", SOON, |t| {
            t.contains("-H 'Deploy-Route-Rule: scale-out'") && t.contains("/d/chat/")
        })
        .await;
    browser.screenshot("deployment-running-1280x800").await;

    browser.click("button.release").await;
    browser.click("button.confirm-release").await;
    let took = browser
        .wait_text(head_badge, Duration::from_secs(5), |t| t == "Standby")
        .await;
    eprintln!("release to Standby on the page: {took:?}");
    assert_eq!(
        browser.run("return window.notReloaded === true").await,
        true
    );
    browser.screenshot("deployment-released").await;
    // A cold start by a request: its timeline gains the first byte.
    let code = tokio::task::spawn_blocking(move || support::binary::status(port, "/d/chat/", None))
        .await
        .unwrap();
    assert_eq!(code, 200);
    browser
        .wait_text(".deployment-head .badge", SOON, |t| t == "Running")
        .await;
    let first_bytes = "return document.querySelectorAll('.timeline .phase-first').length";
    for _ in 0..100 {
        if browser.run(first_bytes).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(browser.run(first_bytes).await, 1);
    browser.screenshot("deployment-cold-start-1280x800").await;
    browser.close().await;
    stop(process).await;
}

#[tokio::test]
async fn an_invalid_edit_shows_the_field_error_next_to_the_field() {
    let Some((browser, process, _, _dir)) = open("edit", None, "#/d/chat").await else {
        return;
    };
    browser
        .wait_text(".deployment-head .badge", SOON, |t| t == "Standby")
        .await;
    browser.click("#edit").await;
    let field = browser
        .client
        .wait()
        .at_most(SOON)
        .for_element(Locator::Css("#field-max_instances"))
        .await
        .unwrap();
    field.clear().await.unwrap();
    field.send_keys("0").await.unwrap();
    browser.click("#save").await;
    browser
        .wait_text("#error-max_instances", SOON, |t| {
            t.contains("must be 1 to 1000")
        })
        .await;
    assert_eq!(
        browser.text("#error-name").await.as_deref(),
        Some(""),
        "only the wrong field is marked"
    );
    browser.screenshot("edit-field-error").await;
    // A valid edit goes through.
    field.clear().await.unwrap();
    field.send_keys("2").await.unwrap();
    let name = browser
        .client
        .find(Locator::Css("#field-name"))
        .await
        .unwrap();
    name.clear().await.unwrap();
    name.send_keys("Chat model v2").await.unwrap();
    browser.click("#save").await;
    browser
        .wait_text(".deployment-head h1", SOON, |t| t == "Chat model v2")
        .await;
    browser.close().await;
    stop(process).await;
}

#[tokio::test]
async fn a_hostile_description_is_shown_literally_and_runs_no_script() {
    let Some((browser, process, _, _dir)) = open("hostile", None, "").await else {
        return;
    };
    let description = "tr[data-deployment=\"odd\"] .description";
    browser.wait_text(description, SOON, |t| t == HOSTILE).await;
    browser
        .wait_text("tr[data-deployment=\"odd\"] .name", SOON, |t| {
            t == "<b>not bold</b>"
        })
        .await;
    assert_eq!(
        browser
            .run("return document.querySelectorAll('main img, main b').length")
            .await,
        0
    );
    // alert(1) would have opened a dialog.
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "an alert opened"
    );
    browser.screenshot("hostile-overview").await;
    browser
        .client
        .goto(&format!(
            "{}#/d/odd",
            browser.client.current_url().await.unwrap()
        ))
        .await
        .unwrap();
    browser
        .wait_text(".deployment-head .description", SOON, |t| t == HOSTILE)
        .await;
    assert_eq!(
        browser
            .run("return document.querySelectorAll('main img').length")
            .await,
        0
    );
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "an alert opened"
    );
    browser.screenshot("hostile-deployment").await;
    // Delete asks first, then the overview no longer lists it.
    browser.click("#delete").await;
    browser.click("#confirm-delete").await;
    browser
        .wait_text("table.deployments", SOON, |t| !t.contains("not bold"))
        .await;
    assert!(browser.text(&badge("chat")).await.is_some());
    browser.close().await;
    stop(process).await;
}

#[tokio::test]
async fn a_wrong_token_gets_a_clear_message_and_the_right_one_stays_out_of_urls_and_cookies() {
    let Some((browser, process, _, _dir)) = open("token", Some(TOKEN), "").await else {
        return;
    };
    let input = browser
        .client
        .wait()
        .at_most(SOON)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    input.send_keys("not-the-token").await.unwrap();
    browser.click("#token-submit").await;
    browser
        .wait_text("#token-error", SOON, |t| t.starts_with("Wrong token"))
        .await;
    browser.screenshot("wrong-token").await;
    input.clear().await.unwrap();
    input.send_keys(TOKEN).await.unwrap();
    browser.click("#token-submit").await;
    browser
        .wait_text(&badge("chat"), SOON, |t| t == "Standby")
        .await;
    browser
        .wait_text("#connection", SOON, |t| t == "live")
        .await;
    assert_eq!(
        browser
            .run("return sessionStorage.getItem('autodeploy.admin_token')")
            .await,
        TOKEN
    );
    assert_eq!(browser.run("return document.cookie").await, "");
    let url = browser.client.current_url().await.unwrap();
    assert!(!url.as_str().contains(TOKEN), "{url}");
    let banner = browser.text("#banner").await.unwrap_or_default();
    assert!(!banner.contains("open"), "{banner}");
    browser.close().await;
    stop(process).await;
}

#[tokio::test]
async fn the_page_reconnects_after_the_gateway_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let Some((browser, process, port, _dir)) = open("restart", None, "#/d/chat").await else {
        return;
    };
    browser
        .wait_text("#connection", SOON, |t| t == "live")
        .await;
    browser.run("window.notReloaded = true; return true").await;
    stop(process).await;
    browser
        .wait_text("#connection", SOON, |t| t.starts_with("reconnecting"))
        .await;
    browser.screenshot("restart-reconnecting").await;
    let config = write_config(dir.path(), port, None);
    let process = gateway(&config, port).await;
    let took = browser
        .wait_text("#connection", SOON, |t| t == "live")
        .await;
    eprintln!("reconnected {took:?} after the gateway answered again");
    // The new gateway's events reach the page: pre-warm shows Running without a reload.
    browser
        .wait_text(".deployment-head .badge", SOON, |t| t == "Standby")
        .await;
    browser.click("#prewarm").await;
    browser
        .wait_text(".deployment-head .badge", Duration::from_secs(2), |t| {
            t == "Running"
        })
        .await;
    assert_eq!(
        browser.run("return window.notReloaded === true").await,
        true
    );
    browser.screenshot("restart-reconnected").await;
    browser.close().await;
    stop(process).await;
}

#[tokio::test]
async fn at_phone_width_the_tables_become_cards_without_sideways_scrolling() {
    let Some(browser) = Browser::phone("phone", 390, 844).await else {
        return;
    };
    let (browser, process, port, _dir) = open_in(browser, None, "").await.expect("opened");
    assert_eq!(browser.run("return window.innerWidth").await, 390);
    browser
        .wait_text(&badge("warm"), SOON, |t| t == "Running")
        .await;
    let no_sideways = "return document.documentElement.scrollWidth <= window.innerWidth";
    assert_eq!(
        browser.run(no_sideways).await,
        true,
        "the overview scrolls sideways"
    );
    assert_eq!(
        browser
            .run(
                "return getComputedStyle(document.querySelector('table.deployments thead')).display"
            )
            .await,
        "none"
    );
    browser.screenshot("overview-390x844").await;
    browser
        .client
        .goto(&format!("http://127.0.0.1:{port}/ui/#/d/warm"))
        .await
        .unwrap();
    browser
        .wait_text("tr[data-instance] .state", SOON, |t| t == "ready")
        .await;
    assert_eq!(
        browser.run(no_sideways).await,
        true,
        "the deployment page scrolls sideways"
    );
    browser.screenshot("deployment-390x844").await;
    browser.close().await;
    stop(process).await;
}
