//! The test server harness (`testing::Server`): a real PostgreSQL that
//! keeps what was committed across a kill -9 and a restart.

mod common;

use common::*;
use gen_registry::state::Stored;

#[test]
fn the_test_server_keeps_committed_writes_across_a_kill_and_a_restart() {
    let server = server();
    let store = store(&server);
    run(30, {
        let store = store.clone();
        async move {
            let mut n = Stored::<u64>::load(&store, "n", &1u64).await.unwrap();
            *n += 5;
            n.write().await.unwrap();
        }
    });
    server.kill().unwrap();
    server.restart().unwrap();
    run(30, async move {
        // The store's connections broke with the server; it opens new ones.
        let again = Stored::<u64>::load(&store, "n", &1u64).await.unwrap();
        assert_eq!((*again, again.version()), (5, 1));
    });
}
