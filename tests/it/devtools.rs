//! Headless Chromium driven over the DevTools protocol on a pipe, for browser tests that click:
//! `--remote-debugging-pipe` makes Chromium read commands from fd 3 and write answers and events to
//! fd 4, each a JSON text ending in a NUL byte. A shell maps fd 3 and 4 to the child's stdin and
//! stdout, so no socket and no extra crate is needed. Every wait is bounded; the process group is
//! killed when the driver is dropped.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How long one command's answer or one awaited event may take.
const WAIT: Duration = Duration::from_secs(30);

pub struct Devtools {
    child: Child,
    group: Option<u32>,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
    next_id: u64,
    /// Events read while waiting for something else.
    events: VecDeque<Value>,
    profile: tempfile::TempDir,
}

impl Devtools {
    /// Starts headless Chromium with a throwaway profile.
    pub async fn start(chromium: &Path) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg("exec \"$@\" 3<&0 4>&1 0</dev/null 1>&2")
            .arg("sh")
            .arg(chromium)
            .args(crate::browser::HEADLESS)
            .args(["--remote-debugging-pipe", "--window-size=1280,900"])
            .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .process_group(0);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
        let group = child.id();
        let commands = child.stdin.take().unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap());
        Self { child, group, commands, answers, next_id: 0, events: VecDeque::new(), profile }
    }

    /// What Chromium wrote to stderr so far (for a failure's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    async fn read(&mut self) -> Value {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(WAIT, self.answers.read_until(0, &mut buf)).await;
        let n =
            read.unwrap_or_else(|_| panic!("chromium said nothing for {WAIT:?}; its log:\n{}", self.log())).unwrap();
        assert!(n > 0, "chromium closed the pipe; its log:\n{}", self.log());
        if buf.last() == Some(&0) {
            buf.pop();
        }
        serde_json::from_slice(&buf).unwrap_or_else(|e| panic!("not JSON from chromium ({e}): {buf:?}"))
    }

    /// Sends `method` (to a page's `session`, or to the browser) and returns its result.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).await.unwrap();
        self.commands.flush().await.unwrap();
        let answer = async {
            loop {
                let answer = self.read().await;
                if answer["id"] == id {
                    return answer;
                }
                if answer.get("method").is_some() {
                    self.events.push_back(answer);
                }
            }
        };
        let Ok(answer) = tokio::time::timeout(WAIT, answer).await else {
            panic!("no answer to {method} within {WAIT:?}; chromium's log:\n{}", self.log());
        };
        assert!(answer.get("error").is_none(), "{method} {params}: {answer}", params = message["params"]);
        answer["result"].clone()
    }

    /// Waits for the event `method` of `session` (one seen before counts); its params.
    pub async fn event(&mut self, session: &str, method: &str) -> Value {
        let fits = |e: &Value| e["method"] == method && e["sessionId"] == session;
        if let Some(at) = self.events.iter().position(fits) {
            return self.events.remove(at).unwrap()["params"].clone();
        }
        let wait = async {
            loop {
                let message = self.read().await;
                if fits(&message) {
                    return message["params"].clone();
                }
            }
        };
        match tokio::time::timeout(WAIT, wait).await {
            Ok(params) => params,
            Err(_) => panic!("no {method} within {WAIT:?}; chromium's log:\n{}", self.log()),
        }
    }

    /// Opens a new tab and returns its session.
    pub async fn tab(&mut self) -> String {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"})).await;
        let attached =
            self.call(None, "Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await;
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        self.call(Some(&session), "Page.enable", json!({})).await;
        session
    }

    /// Loads `url` in the tab and waits until it is loaded.
    pub async fn open(&mut self, session: &str, url: &str) {
        let navigated = self.call(Some(session), "Page.navigate", json!({"url": url})).await;
        assert!(navigated.get("errorText").is_none(), "{url}: {navigated}");
        self.event(session, "Page.loadEventFired").await;
    }

    /// The node the CSS `selector` finds in the tab's document.
    pub async fn node(&mut self, session: &str, selector: &str) -> i64 {
        let document = self.call(Some(session), "DOM.getDocument", json!({"depth": 0})).await;
        let root = &document["root"]["nodeId"];
        let found = self.call(Some(session), "DOM.querySelector", json!({"nodeId": root, "selector": selector})).await;
        let node = found["nodeId"].as_i64().unwrap_or(0);
        assert!(node > 0, "no {selector} on the page:\n{}", self.html(session).await);
        node
    }

    /// Types `text` into the field `selector`, as a person would.
    pub async fn type_into(&mut self, session: &str, selector: &str, text: &str) {
        let node = self.node(session, selector).await;
        self.call(Some(session), "DOM.focus", json!({"nodeId": node})).await;
        self.call(Some(session), "Input.insertText", json!({"text": text})).await;
    }

    /// Clicks the middle of the element `selector` with the mouse.
    pub async fn click(&mut self, session: &str, selector: &str) {
        let node = self.node(session, selector).await;
        self.call(Some(session), "DOM.scrollIntoViewIfNeeded", json!({"nodeId": node})).await;
        let quads = self.call(Some(session), "DOM.getContentQuads", json!({"nodeId": node})).await;
        let quad: Vec<f64> = quads["quads"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let x = (quad[0] + quad[2] + quad[4] + quad[6]) / 4.0;
        let y = (quad[1] + quad[3] + quad[5] + quad[7]) / 4.0;
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            let event = json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1});
            self.call(Some(session), "Input.dispatchMouseEvent", event).await;
        }
    }

    /// The tab's document as HTML now.
    pub async fn html(&mut self, session: &str) -> String {
        let document = self.call(Some(session), "DOM.getDocument", json!({"depth": 0})).await;
        let root = document["root"]["nodeId"].clone();
        let html = self.call(Some(session), "DOM.getOuterHTML", json!({"nodeId": root})).await;
        html["outerHTML"].as_str().unwrap().to_owned()
    }

    /// A PNG of what the tab shows.
    pub async fn screenshot(&mut self, session: &str) -> Vec<u8> {
        use base64::Engine;
        let shot = self.call(Some(session), "Page.captureScreenshot", json!({"format": "png"})).await;
        base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap()
    }

    /// Closes the browser and waits (bounded) for it to end.
    pub async fn close(mut self) {
        let _ = self.commands.write_all(b"{\"id\":0,\"method\":\"Browser.close\"}\0").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

impl Drop for Devtools {
    fn drop(&mut self) {
        // Chromium's helper processes are in its process group; end them all.
        if let (Some(group), Ok(None)) = (self.group, self.child.try_wait()) {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
        }
    }
}
