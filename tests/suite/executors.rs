//! Workers on each executor: tokio I/O inside workers (a TCP round trip and a
//! tokio timer), blocking work that does not keep other ids from being
//! answered, and the bad inputs of the tokio executor (a registry created
//! outside any runtime, a runtime shut down under live workers).
//!
//! Bastion's executor without a tokio handle cannot drive tokio I/O: that is
//! covered too, so the limitation stays documented by a test.

use crate::common::tokio_runtime;
use gen_registry::{Context, Error, Executor, GenRegistry, Options, Worker};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Waits, on the caller's thread, until `condition` holds; panics after 10 s.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---- tokio I/O inside workers ----

/// Keeps a TCP connection to an echo server, opened in `init`, and answers a
/// request with what the server echoed, after a tokio timer.
struct Echo {
    stream: tokio::net::TcpStream,
}

impl Worker for Echo {
    type Id = u32;
    type Args = std::net::SocketAddr;
    type Request = String;
    type Reply = String;
    type Message = ();
    type Error = std::io::Error;

    async fn init(
        _: &u32,
        server: std::net::SocketAddr,
        _: &Context<Self>,
    ) -> Result<Self, Self::Error> {
        let stream = tokio::net::TcpStream::connect(server).await?;
        Ok(Echo { stream })
    }

    async fn handle_call(&mut self, line: String, _: &mut Context<Self>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.stream.write_all(line.as_bytes()).await.expect("write");
        let mut echoed = vec![0; line.len()];
        self.stream.read_exact(&mut echoed).await.expect("read");
        String::from_utf8(echoed).expect("utf-8")
    }
}

/// An echo server on 127.0.0.1, on `rt`.
fn echo_server(rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let address = listener.local_addr().expect("address");
    rt.spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = [0; 256];
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

fn tcp_round_trips_on(rt: &tokio::runtime::Runtime, registry: GenRegistry<Echo>) {
    let server = echo_server(rt);
    let replies = rt.block_on(async {
        let mut replies = Vec::new();
        for id in 0..4 {
            let worker = registry.lookup_or_start(id, server).await.expect("start");
            replies.push(worker.call(format!("hello {id}")).await.expect("call"));
        }
        registry.shutdown().await;
        replies
    });
    assert_eq!(replies, ["hello 0", "hello 1", "hello 2", "hello 3"]);
}

#[test]
fn workers_on_tokio_do_tcp_and_timers() {
    let rt = tokio_runtime();
    let options = Options::default().executor(Executor::Tokio(rt.handle().clone()));
    tcp_round_trips_on(&rt, GenRegistry::new(options).unwrap());
}

#[test]
fn workers_on_the_current_tokio_runtime_do_tcp_and_timers() {
    let rt = tokio_runtime();
    let registry = rt.block_on(async {
        GenRegistry::new(Options::default().executor(Executor::CurrentTokio)).unwrap()
    });
    assert!(matches!(
        registry.options().get_executor(),
        Executor::Tokio(_)
    ));
    tcp_round_trips_on(&rt, registry);
}

#[test]
fn workers_on_bastion_given_a_tokio_handle_do_tcp_and_timers() {
    let rt = tokio_runtime();
    let options = Options::default().executor(Executor::BastionWithTokio(rt.handle().clone()));
    tcp_round_trips_on(&rt, GenRegistry::new(options).unwrap());
}

#[test]
fn workers_on_bastion_without_a_tokio_handle_cannot_use_tokio_io() {
    let rt = tokio_runtime();
    let server = echo_server(&rt);
    let registry = GenRegistry::<Echo>::new(Options::default()).unwrap();
    let started = futures::executor::block_on(registry.lookup_or_start(1, server));
    match started {
        Err(Error::InitPanicked(message)) => assert!(message.contains("reactor"), "{message}"),
        other => panic!("expected tokio's missing-reactor panic, got {other:?}"),
    }
}

// ---- blocking work ----

/// A worker whose `Block` request waits, in `Context::blocking`, until its
/// gate opens, and tells whether that ran on another thread than its own;
/// `Ping` answers at once.
struct Blocker;

enum Job {
    Block(std::sync::mpsc::Receiver<()>),
    Ping,
}

impl Worker for Blocker {
    type Id = u32;
    type Args = Arc<AtomicUsize>;
    type Request = Job;
    type Reply = u32;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, _: Arc<AtomicUsize>, _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Blocker)
    }

    async fn handle_call(&mut self, job: Job, ctx: &mut Context<Self>) -> u32 {
        match job {
            // 1 if the gate opened and the work ran off the thread that
            // polls this worker.
            Job::Block(gate) => {
                let polling = std::thread::current().id();
                let ran_on = ctx
                    .blocking(move || gate.recv().map(|()| std::thread::current().id()))
                    .await;
                u32::from(ran_on.is_ok_and(|ran_on| ran_on != polling))
            }
            Job::Ping => *ctx.id(),
        }
    }
}

/// Blocks more workers than the executor has threads, then checks that other
/// ids still start and answer before any gate opens, and that the blocking
/// work ran on other threads than the workers'. (Bastion's executor starts
/// threads when its own are blocked, after a delay, so the first check alone
/// would pass, slowly, with work blocking its threads; the second would not.)
fn blocking_work_leaves_others_served(
    registry: GenRegistry<Blocker>,
    spawn: impl Fn(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
) {
    const BLOCKED: u32 = 8;
    let entered = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut gates = Vec::new();
    for id in 0..BLOCKED {
        let (open, gate) = std::sync::mpsc::channel();
        gates.push(open);
        let (registry, entered, answered) = (registry.clone(), entered.clone(), answered.clone());
        spawn(Box::pin(async move {
            let worker = registry.lookup_or_start(id, entered.clone()).await.unwrap();
            entered.fetch_add(1, Ordering::SeqCst);
            assert_eq!(worker.call(Job::Block(gate)).await.unwrap(), 1);
            answered.fetch_add(1, Ordering::SeqCst);
        }));
    }
    wait_for("every blocked worker started", || {
        entered.load(Ordering::SeqCst) == BLOCKED as usize
    });
    let others = futures::executor::block_on(async {
        let mut others = 0;
        for id in 100..120 {
            let worker = registry.lookup_or_start(id, entered.clone()).await.unwrap();
            assert_eq!(worker.call(Job::Ping).await.unwrap(), id);
            others += 1;
        }
        others
    });
    assert_eq!(others, 20);
    assert_eq!(answered.load(Ordering::SeqCst), 0, "a gate opened early");
    for open in gates {
        open.send(()).unwrap();
    }
    wait_for("every blocked worker answered", || {
        answered.load(Ordering::SeqCst) == BLOCKED as usize
    });
    futures::executor::block_on(registry.shutdown());
}

#[test]
fn blocking_work_on_bastion_does_not_keep_other_ids_from_being_answered() {
    let registry = GenRegistry::new(Options::default()).unwrap();
    blocking_work_leaves_others_served(registry, |f| drop(bastion::executor::spawn(f)));
}

#[test]
fn blocking_work_on_tokio_does_not_keep_other_ids_from_being_answered() {
    let rt = tokio_runtime();
    let registry =
        GenRegistry::new(Options::default().executor(Executor::Tokio(rt.handle().clone())))
            .unwrap();
    blocking_work_leaves_others_served(registry, |f| drop(rt.spawn(f)));
}

#[test]
fn a_panic_in_blocking_work_is_a_panic_in_the_handler() {
    struct Panicky;
    impl Worker for Panicky {
        type Id = u8;
        type Args = ();
        type Request = ();
        type Reply = ();
        type Message = ();
        type Error = std::convert::Infallible;
        async fn init(_: &u8, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
            Ok(Panicky)
        }
        async fn handle_call(&mut self, _: (), ctx: &mut Context<Self>) {
            ctx.blocking(|| panic!("deliberate: blocking work failed"))
                .await
        }
    }
    let rt = tokio_runtime();
    for executor in [Executor::Bastion, Executor::Tokio(rt.handle().clone())] {
        let registry = GenRegistry::<Panicky>::new(Options::default().executor(executor)).unwrap();
        futures::executor::block_on(async {
            let worker = registry.lookup_or_start(1, ()).await.unwrap();
            match worker.call(()).await {
                Err(Error::HandlerPanicked(m)) => {
                    assert!(m.contains("blocking work failed"), "{m}")
                }
                other => panic!("expected HandlerPanicked, got {other:?}"),
            }
            assert!(
                registry.lookup(&1).is_err(),
                "the worker outlived its panic"
            );
        });
    }
}

// ---- bad input ----

#[test]
fn a_registry_on_the_current_tokio_runtime_outside_any_runtime_is_refused() {
    let refused = GenRegistry::<Blocker>::new(Options::default().executor(Executor::CurrentTokio));
    match refused {
        Err(Error::InvalidOptions(why)) => assert!(why.contains("tokio runtime"), "{why}"),
        other => panic!("expected InvalidOptions, got {other:?}"),
    }
}

#[test]
fn a_runtime_shut_down_under_live_workers_ends_them_and_refuses_new_starts() {
    let rt = tokio_runtime();
    let registry = GenRegistry::<Blocker>::new(
        Options::default().executor(Executor::Tokio(rt.handle().clone())),
    )
    .unwrap();
    let args = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..10)
        .map(|id| futures::executor::block_on(registry.lookup_or_start(id, args.clone())).unwrap())
        .collect();
    assert_eq!(registry.count(), 10);
    drop(rt);
    wait_for("the workers of a dropped runtime ended", || {
        registry.count() == 0
    });
    futures::executor::block_on(async {
        for worker in &workers {
            assert!(matches!(
                worker.call(Job::Ping).await,
                Err(Error::WorkerEnded)
            ));
        }
        match registry.lookup_or_start(99, args.clone()).await {
            Err(Error::ExecutorShutDown) => {}
            other => panic!("expected ExecutorShutDown, got {other:?}"),
        }
        assert!(registry.lookup(&99).is_err());
        registry.shutdown().await;
    });
}
