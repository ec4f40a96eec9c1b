//! The memory registry shows the same behaviour as etcd.

mod common;

use std::sync::Arc;

use micro_registry::{Memory, Registry};

#[tokio::test]
async fn register_get_deregister() {
    common::register_get_deregister(&Memory::new()).await;
}

#[tokio::test]
async fn watch_create_update_delete_expire() {
    common::watch_create_update_delete_expire(&Memory::new()).await;
}

#[tokio::test]
async fn expires_without_renewal() {
    common::expires_without_renewal(&Memory::new()).await;
}

#[tokio::test]
async fn renewal_keeps_node_without_events() {
    common::renewal_keeps_node_without_events(&Memory::new()).await;
}

#[tokio::test]
async fn cache_follows_watch() {
    let registry: Arc<dyn Registry> = Arc::new(Memory::new());
    common::cache_follows_watch(registry).await;
}
