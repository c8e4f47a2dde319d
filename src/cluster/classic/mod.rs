//! Classic queues reachable from every node: the cluster's log says where each
//! classic queue lives (its home, the node it was declared through); the home holds
//! the queue itself, every other node a [`RemoteQueue`] in its place that reaches
//! the home over the cluster link ([`link`] on this side, [`home`] on the home's).
//!
//! Bindings of classic queues replicate as every binding does, so every node routes
//! to them. A classic queue leaves the log when its home deletes it — by queue.delete
//! from any node, auto-delete, x-expires — or loses it (a transient queue does not
//! survive its node's restart): the home notices and replicates the deletion.

pub mod home;
pub mod link;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use super::metadata::ClassicDef;
use super::queues::Replicas;
use crate::queue::remote::{HomeLink, RemoteQueue};
use crate::queue::{Queue, QueueSettings};

/// A classic queue of the cluster, as this node serves it.
pub enum Served {
    /// It lives here.
    Home(Weak<Queue>),
    Remote(Arc<RemoteQueue>),
    /// It lived here and is gone: its deletion is being replicated.
    Leaving,
}

impl Replicas {
    /// A classic queue's declaration, applied here: the home adopts the queue it
    /// created when it was declared, another node creates its remote stand-in.
    /// `replayed`: applied before this run (a restart replays the log).
    pub(super) async fn classic_declared(&self, replayed: bool, vhost: String, name: String, def: ClassicDef) {
        let key = (vhost.clone(), name.clone());
        if self.classic().contains_key(&key) {
            return;
        }
        let Some(broker) = self.broker.upgrade() else { return };
        let Some(vh) = broker.vhost(&vhost) else {
            log::warn!("cluster: classic queue '{name}': vhost '{vhost}' does not exist on this node");
            return;
        };
        let settings = QueueSettings {
            durable: def.durable,
            exclusive_owner: None,
            auto_delete: def.auto_delete,
            arguments: def.arguments.clone(),
        };
        if def.home == self.node_id {
            // The home created it when it was declared (and a restart restored it
            // from the store if it is durable).
            let Some(q) = vh.queue(&name).filter(|q| q.home().is_none()) else {
                log::info!(
                    "cluster: classic queue '{name}' in vhost '{vhost}' is no longer on this node, its home ({}); deleting it in the cluster",
                    if replayed { "a transient queue does not survive a restart" } else { "deleted meanwhile" }
                );
                self.delete_lost(&vhost, &name);
                return;
            };
            self.classic().insert(key, Served::Home(Arc::downgrade(&q)));
            return;
        }
        let link: Arc<dyn HomeLink> = self.links.to(def.home);
        let home = (def.home, crate::broker::node_name(Some(def.home)));
        let q = RemoteQueue::new(name.as_str().into(), vh.name.clone(), settings, home, link);
        if !vh.insert_replicated_queue(q.clone() as Arc<Queue>) {
            log::warn!("cluster: classic queue '{name}' in vhost '{vhost}' lives on node {}, but a queue of that name exists on this node; it stays, the other is not served here", def.home);
            return;
        }
        log::debug!("cluster: classic queue '{name}' in vhost '{vhost}' is served here from node {}", def.home);
        self.classic().insert(key, Served::Remote(q));
    }

    /// A classic queue's deletion, applied here.
    pub(super) fn classic_deleted(&self, vhost: &str, name: &str) {
        let Some(served) = self.classic().remove(&(vhost.to_string(), name.to_string())) else { return };
        let Some(vh) = self.broker.upgrade().and_then(|b| b.vhost(vhost)) else { return };
        match served {
            Served::Remote(q) => {
                q.home_deleted();
                vh.delete_queue(&(q as Arc<Queue>));
            }
            Served::Leaving => {}
            Served::Home(q) => {
                log::info!("cluster: classic queue '{name}' in vhost '{vhost}' is deleted in the cluster; deleting it here, its home");
                if let Some(q) = q.upgrade().filter(|q| vh.queue(q.name()).is_some_and(|cur| Arc::ptr_eq(&cur, q))) {
                    vh.delete_queue(&q);
                }
            }
        }
    }

    /// Brings the classic queues in line with a snapshot of the metadata.
    pub(super) async fn classic_resync(&self, classic: &BTreeMap<String, BTreeMap<String, ClassicDef>>) {
        let wanted: Vec<((String, String), ClassicDef)> = classic
            .iter()
            .flat_map(|(vhost, queues)| {
                queues.iter().map(move |(name, def)| ((vhost.clone(), name.clone()), def.clone()))
            })
            .collect();
        let gone: Vec<(String, String)> =
            self.classic().keys().filter(|k| !wanted.iter().any(|(w, _)| w == *k)).cloned().collect();
        for (vhost, name) in gone {
            self.classic_deleted(&vhost, &name);
        }
        for ((vhost, name), def) in wanted {
            self.classic_declared(true, vhost, name, def).await;
        }
    }

    /// The home's periodic check: a classic queue that left this node (deleted,
    /// auto-deleted, expired) leaves the cluster's log.
    pub(super) fn classic_reconcile(&self) {
        let Some(broker) = self.broker.upgrade() else { return };
        let lost: Vec<(String, String)> = self
            .classic()
            .iter_mut()
            .filter_map(|((vhost, name), served)| {
                let Served::Home(q) = served else { return None };
                let here = q.upgrade().is_some_and(|q| {
                    broker.vhost(vhost).and_then(|vh| vh.queue(name)).is_some_and(|cur| Arc::ptr_eq(&cur, &q))
                });
                if here {
                    return None;
                }
                // Asked once: the entry stays until the deletion is applied.
                *served = Served::Leaving;
                Some((vhost.clone(), name.clone()))
            })
            .collect();
        for (vhost, name) in lost {
            log::info!("cluster: classic queue '{name}' in vhost '{vhost}' left this node, its home; deleting it in the cluster");
            self.delete_lost(&vhost, &name);
        }
    }

    fn delete_lost(&self, vhost: &str, name: &str) {
        if let Some(cluster) = self.broker.upgrade().and_then(|b| b.cluster().cloned()) {
            let what = format!("classic queue '{name}' in vhost '{vhost}'");
            cluster.delete_classic_queue(
                vhost,
                name,
                Box::new(move |r| {
                    if let Err(e) = r {
                        log::warn!("cluster: the deletion of {what} was not replicated: {e}");
                    }
                }),
            );
        }
    }
}
