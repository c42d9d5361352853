//! The `tracing` spans a registry opens around each worker's `init`,
//! `handle_call` and `terminate`: named after the callback, carrying the
//! worker's id (cut as messages show it), the registry's name and the
//! incarnation. A binary of its own: its subscriber is the process's
//! global one.

use gen_registry::{Context, GenRegistry, Options, RestartPolicy, Worker};
use std::fmt::Debug;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A subscriber that wants the registry's spans and writes each one down
/// as `name field=value ...`.
#[derive(Default)]
struct Spans {
    seen: Mutex<Vec<String>>,
    next: AtomicU64,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }
}

impl Subscriber for &'static Spans {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "gen_registry" && metadata.is_span()
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(span.metadata().name().to_owned());
        span.record(&mut fields);
        self.seen.lock().unwrap().push(fields.0);
        Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Answers with its id's length; panics on request.
struct Named;

impl Worker for Named {
    type Id = String;
    type Args = ();
    type Request = bool; // panic?
    type Reply = usize;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &String, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Named)
    }

    async fn handle_call(&mut self, panic: bool, ctx: &mut Context<Self>) -> usize {
        assert!(!panic, "asked to panic");
        ctx.id().len()
    }
}

#[test]
fn init_call_and_terminate_run_in_spans_with_the_id_the_registry_and_the_incarnation() {
    let spans: &'static Spans = Box::leak(Box::default());
    tracing::subscriber::set_global_default(spans).unwrap();
    std::panic::set_hook(Box::new(|_| {})); // the deliberate panic below
    futures::executor::block_on(async {
        let options = Options::default()
            .name("spans")
            .restart(RestartPolicy::Always)
            .back_off(gen_registry::BackOff::Immediate);
        let registry = GenRegistry::<Named>::new(options).unwrap();
        let worker = registry.start("a".to_owned(), ()).await.unwrap();
        assert_eq!(worker.call(false).await.unwrap(), 1);
        let _ = worker.call(true).await; // crashes; the restart is incarnation 1
        assert_eq!(worker.call(false).await.unwrap(), 1);
        registry.stop("a").await.unwrap();

        let long = "x".repeat(100);
        registry.start(long.clone(), ()).await.unwrap();
        registry.stop(&long).await.unwrap();
        registry.shutdown().await;
    });
    let seen = spans.seen.lock().unwrap().clone();
    let cut = format!("\"{}… (102 bytes)", "x".repeat(63));
    assert_eq!(
        seen,
        [
            r#"init id="a" registry=spans incarnation=0"#.to_owned(),
            r#"call id="a" registry=spans incarnation=0"#.to_owned(),
            r#"call id="a" registry=spans incarnation=0"#.to_owned(),
            r#"terminate id="a" registry=spans incarnation=0"#.to_owned(),
            r#"init id="a" registry=spans incarnation=1"#.to_owned(),
            r#"call id="a" registry=spans incarnation=1"#.to_owned(),
            r#"terminate id="a" registry=spans incarnation=1"#.to_owned(),
            format!("init id={cut} registry=spans incarnation=0"),
            format!("terminate id={cut} registry=spans incarnation=0"),
        ]
    );
}
