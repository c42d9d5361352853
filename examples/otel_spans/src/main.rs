//! A registry's spans, exported with OpenTelemetry.
//!
//! The registry opens a `DEBUG` span (target `gen_registry`) around each
//! worker's `init`, `handle_call` and `terminate`, with the worker's `id`,
//! the registry's name (`registry`) and the worker's `incarnation` (0, then
//! one more per restart). They cost nothing unless a subscriber asks for
//! them; here `tracing-opentelemetry` turns them into OpenTelemetry spans.
//!
//! No collector is reachable from this example, so the spans go to an
//! in-memory exporter, and the program prints them and checks them. A
//! service swaps in its OTLP exporter (`opentelemetry-otlp`) where the
//! exporter is built; nothing else changes.
//!
//! ```sh
//! cargo run -p otel_spans      # from the repository's root
//! ```

use gen_registry::{Context, GenRegistry, Options, Worker};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

/// One shopping cart per user id.
struct Cart {
    items: Vec<String>,
}

impl Worker for Cart {
    type Id = u64;
    type Args = ();
    type Request = String; // an item to add
    type Reply = usize; // the items in the cart
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_user: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Cart { items: Vec::new() })
    }

    async fn handle_call(&mut self, item: String, _: &mut Context<Self>) -> usize {
        self.items.push(item);
        self.items.len()
    }
}

/// The value of attribute `key`, as text.
fn attribute(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The exporter (an OTLP exporter in a service) and the provider that
    // batches nothing: each span is exported when it ends.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("otel_spans");
    // Ask for the registry's spans (DEBUG, target `gen_registry`) only.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(Targets::new().with_target("gen_registry", Level::DEBUG));
    tracing::subscriber::set_global_default(subscriber)?;

    futures::executor::block_on(async {
        let carts = GenRegistry::<Cart>::new(Options::default().name("carts"))?;
        for (user, item) in [(7, "tea"), (7, "milk"), (9, "bread")] {
            carts.call(user, (), item.to_owned()).await?;
        }
        carts.stop(&7).await?;
        carts.shutdown().await;
        Ok::<_, gen_registry::Error<Cart>>(())
    })?;
    provider.force_flush()?;

    let spans = exporter.get_finished_spans()?;
    for span in &spans {
        println!(
            "span {:<9} id={} registry={} incarnation={} took {:?}",
            span.name,
            attribute(&span.attributes, "id"),
            attribute(&span.attributes, "registry"),
            attribute(&span.attributes, "incarnation"),
            span.end_time
                .duration_since(span.start_time)
                .unwrap_or_default(),
        );
    }
    let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
    // Two users: two inits, three calls, two terminates.
    assert_eq!(
        (count("init"), count("call"), count("terminate")),
        (2, 3, 2)
    );
    assert!(
        spans
            .iter()
            .all(|s| attribute(&s.attributes, "registry") == "carts")
    );
    println!("{} spans exported", spans.len());
    provider.shutdown()?;
    Ok(())
}
