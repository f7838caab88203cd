//! The journal's protocol through a fake target: record → deliver → settle; a crash after the
//! record is reconciled by probing; an ambiguous failure keeps the intent.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::*;
use crate::codec::Format;
use crate::domain::SystemClock;

/// How the fake answers its next delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Deliver,
    /// Stores the document, then the answer is lost (a timeout after the write).
    LoseAnswer,
    /// Stores the document, then never answers (the process dies while it waits).
    Hang,
    /// Refuses the document.
    Refuse,
}

/// A target that keeps output hashes in memory, counts deliveries and checks that every delivery
/// has its intent recorded first.
#[derive(Debug)]
struct Fake {
    store: Store,
    held: Mutex<HashMap<String, String>>,
    /// (item key, idempotency key) of every delivery that reached the target.
    deliveries: Mutex<Vec<(String, String)>>,
    probes: Mutex<usize>,
    mode: Mutex<Mode>,
}

impl Fake {
    fn new(store: &Store) -> Self {
        Self {
            store: store.clone(),
            held: Mutex::default(),
            deliveries: Mutex::default(),
            probes: Mutex::default(),
            mode: Mutex::new(Mode::Deliver),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn deliveries(&self) -> Vec<(String, String)> {
        self.deliveries.lock().unwrap().clone()
    }
}

impl Target for Fake {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn fingerprint(&self) -> String {
        "fake".into()
    }

    fn intent_body(&self, action: &Action) -> Vec<u8> {
        match action {
            Action::Put { body, .. } => body.to_vec(),
            Action::Delete => Vec::new(),
        }
    }

    fn deliver<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
        _known_version: Option<&'a str>,
        idempotency: &'a str,
    ) -> BoxFuture<'a, Result<Delivered, DeliverError>> {
        Box::pin(async move {
            let intents = self.store.intents().await.unwrap();
            let intent = intents.iter().find(|i| i.item_key == key.as_str()).expect("the intent is recorded first");
            assert_eq!(intent.idempotency_key, idempotency, "sent with the recorded key");
            let mode = *self.mode.lock().unwrap();
            if mode == Mode::Refuse {
                return Err(DeliverError::Permanent { status: 400, excerpt: "no".into() });
            }
            self.deliveries.lock().unwrap().push((key.to_string(), idempotency.to_owned()));
            match action {
                Action::Put { output_hash, .. } => {
                    self.held.lock().unwrap().insert(key.to_string(), output_hash.clone());
                }
                Action::Delete => {
                    self.held.lock().unwrap().remove(key.as_str());
                }
            }
            match mode {
                Mode::LoseAnswer => Err(DeliverError::Transient("timed out".into())),
                Mode::Hang => futures::future::pending().await,
                _ => Ok(Delivered { location: format!("fake/{key}"), version: Some("v1".into()) }),
            }
        })
    }

    fn probe<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
    ) -> BoxFuture<'a, Result<Option<Delivered>, DeliverError>> {
        Box::pin(async move {
            *self.probes.lock().unwrap() += 1;
            let held = self.held.lock().unwrap().get(key.as_str()).cloned();
            let done = match action {
                Action::Put { output_hash, .. } => held.as_ref() == Some(output_hash),
                Action::Delete => held.is_none(),
            };
            Ok(done.then(|| Delivered { location: format!("fake/{key}"), version: Some("v1".into()) }))
        })
    }

    fn rebase<'a>(
        &'a self,
        _key: &'a ItemKey,
        _action: &'a Action,
        known_version: Option<String>,
        _delivered: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Rebased, DeliverError>> {
        Box::pin(async move { Ok(Rebased::Base(known_version)) })
    }

    fn current_version<'a>(&'a self, _key: &'a ItemKey) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async { Ok(None) })
    }
}

async fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&format!("sqlite://{}", dir.path().join("journal.db").display())).await.unwrap()
}

fn journal(store: &Store, run_id: Option<i64>) -> Journal {
    Journal::new(store.clone(), Fence::None, Arc::new(SystemClock), run_id, None)
}

fn put(key: &ItemKey, text: &str) -> Request {
    let body = bytes::Bytes::from(text.to_owned());
    let output_hash = crate::domain::ContentHash::of(&body).to_string();
    Request {
        key: key.clone(),
        target: "portal".into(),
        action: Action::Put { body, format: Format::Json, output_hash },
        known_version: None,
        delivered: None,
        refresh: false,
        provenance: Provenance { source_id: key.source().into(), origin: "feed.json".into(), ..Default::default() },
        resume: None,
    }
}

/// Records the outcome's ledger write: here only the settling of the intent.
async fn record(store: &Store, key: &ItemKey, ticket: Ticket) {
    let mut batch = Batch::default();
    ticket.settle(key.as_str(), "portal", &mut batch);
    store.write_batch(&batch).await.unwrap();
}

fn done(sent: Sent) -> (Ticket, Result<Delivered, DeliverError>) {
    match sent {
        Sent::Done { ticket, result } => (ticket, result),
        Sent::Fenced(why) => panic!("fenced: {why}"),
    }
}

#[tokio::test]
async fn an_intent_is_recorded_before_the_delivery_and_settled_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let fake = Fake::new(&store);
    let key = ItemKey::new("feed", "a");
    let (ticket, result) = done(journal(&store, Some(1)).send(&fake, put(&key, "{\"a\":1}")).await);
    assert_eq!(result.unwrap().location, "fake/feed/a");
    let intents = store.intents().await.unwrap();
    assert_eq!(intents.len(), 1, "the intent stays until the outcome is recorded");
    assert_eq!((intents[0].run_id, intents[0].body.as_slice()), (Some(1), b"{\"a\":1}".as_slice()));
    assert!(ticket.settles());
    record(&store, &key, ticket).await;
    assert!(store.intents().await.unwrap().is_empty(), "settled with the outcome");
    assert_eq!(fake.deliveries().len(), 1);
}

#[tokio::test]
async fn a_crash_after_the_record_is_reconciled_by_probing_and_takes_one_effect() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let fake = Fake::new(&store);
    let (written, unsent) = (ItemKey::new("feed", "written"), ItemKey::new("feed", "unsent"));
    // The process dies while the target holds `written` but before it answered, and before
    // `unsent` was sent at all (its intent recorded).
    fake.set(Mode::Hang);
    let crashed = journal(&store, Some(1));
    let sending = tokio::time::timeout(std::time::Duration::from_millis(200), crashed.send(&fake, put(&written, "1")));
    assert!(sending.await.is_err(), "the delivery never answered");
    let request = put(&unsent, "2");
    let idempotency = idempotency_key(&unsent, "portal", &request.action, None);
    store
        .record_intent(&Intent {
            item_key: unsent.to_string(),
            target: "portal".into(),
            source_id: "feed".into(),
            origin: "feed.json".into(),
            action: "put".into(),
            output_hash: request.action.output_hash().into(),
            idempotency_key: idempotency.clone(),
            body: b"2".to_vec(),
            format: "json".into(),
            known_version: None,
            content_hash: None,
            mapping: None,
            mapping_version: None,
            adoptions: None,
            run_id: Some(1),
            created_at: timestamp(chrono::Utc::now()),
            delivery: Some("http".into()),
        })
        .await
        .unwrap();
    assert_eq!(fake.deliveries().len(), 1);

    // The next run reconciles both: it probes first and sends only what the target lacks.
    fake.set(Mode::Deliver);
    let next = journal(&store, Some(2));
    for intent in store.intents().await.unwrap() {
        let key = ItemKey::parse(&intent.item_key).unwrap();
        let LeftOver::Resume { request, message } = next.left_over(&fake, key.clone(), intent).await else {
            panic!("an intent of the same kind is resumed")
        };
        assert!(message.starts_with("reconciling a delivery that run 1 left unfinished"), "{message}");
        let (ticket, result) = done(next.send(&fake, *request).await);
        result.unwrap();
        record(&store, &key, ticket).await;
    }
    assert_eq!(*fake.probes.lock().unwrap(), 2, "both were probed");
    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 2, "one effect each: {deliveries:?}");
    assert_eq!(deliveries[1], (unsent.to_string(), idempotency), "sent with the key its intent recorded");
    assert!(store.intents().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_ambiguous_failure_keeps_the_intent_and_a_refusal_settles_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let fake = Fake::new(&store);
    let key = ItemKey::new("feed", "a");
    fake.set(Mode::LoseAnswer);
    let (ticket, result) = done(journal(&store, Some(1)).send(&fake, put(&key, "1")).await);
    assert!(result.unwrap_err().is_ambiguous());
    assert!(!ticket.settles());
    record(&store, &key, ticket).await;
    assert_eq!(store.intents().await.unwrap().len(), 1, "kept for the next run to probe");

    // The next run finds the document there: no second delivery.
    fake.set(Mode::Deliver);
    let intent = store.intents().await.unwrap().remove(0);
    let LeftOver::Resume { request, .. } = journal(&store, Some(2)).left_over(&fake, key.clone(), intent).await else {
        panic!("resumed")
    };
    let (ticket, result) = done(journal(&store, Some(2)).send(&fake, *request).await);
    result.unwrap();
    record(&store, &key, ticket).await;
    assert_eq!(fake.deliveries().len(), 1);
    assert!(store.intents().await.unwrap().is_empty());

    // A refusal is no doubt about what the target holds: the intent goes with the outcome.
    fake.set(Mode::Refuse);
    let other = ItemKey::new("feed", "b");
    let (ticket, result) = done(journal(&store, Some(3)).send(&fake, put(&other, "3")).await);
    assert!(matches!(result, Err(DeliverError::Permanent { status: 400, .. })));
    record(&store, &other, ticket).await;
    assert!(store.intents().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_left_over_outbox_write_that_never_happened_or_of_another_kind_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let outbox = super::super::outbox::Outbox::new(dir.path().join("outbox"));
    let key = ItemKey::new("feed", "a");
    let request = put(&key, "1");
    let intent = |delivery: &str| Intent {
        item_key: key.to_string(),
        target: "portal".into(),
        source_id: "feed".into(),
        origin: "feed.json".into(),
        action: "put".into(),
        output_hash: request.action.output_hash().into(),
        idempotency_key: "k".into(),
        body: Vec::new(),
        format: "json".into(),
        known_version: None,
        content_hash: None,
        mapping: None,
        mapping_version: None,
        adoptions: None,
        run_id: Some(1),
        created_at: timestamp(chrono::Utc::now()),
        delivery: Some(delivery.into()),
    };
    let journal = journal(&store, Some(2));
    let LeftOver::Dropped { message, ticket } = journal.left_over(&outbox, key.clone(), intent("outbox")).await else {
        panic!("no file: dropped")
    };
    assert!(message.contains("did not write this document"), "{message}");
    assert!(ticket.settles());
    let LeftOver::Dropped { message, .. } = journal.left_over(&outbox, key.clone(), intent("http")).await else {
        panic!("another kind: dropped")
    };
    assert!(message.contains("when it was an http target; it now delivers by outbox"), "{message}");
    // With the file written, the outbox intent is resumed and its probe finds it.
    let (ticket, result) = done(journal.send(&outbox, request.clone()).await);
    result.unwrap();
    let LeftOver::Resume { request, .. } = journal.left_over(&outbox, key.clone(), intent("outbox")).await else {
        panic!("file there: resumed")
    };
    let (_, result) = done(journal.send(&outbox, *request).await);
    assert!(result.unwrap().location.ends_with("feed%2Fa.json"));
    assert!(store.intents().await.unwrap()[0].body.is_empty(), "an outbox intent keeps no body");
    record(&store, &key, ticket).await;
}
