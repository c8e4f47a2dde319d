//! RabbitMQ's aliveness test (`GET /api/aliveness-test/{vhost}`): declare the queue
//! `aliveness-test`, publish a message to it through the default exchange and get it
//! back. The queue is kept (as RabbitMQ does) so that frequent checks do not churn
//! the topology.

use super::*;

/// The queue the test uses, RabbitMQ's name.
pub const ALIVENESS_QUEUE: &str = "aliveness-test";

impl VHost {
    /// Declares, publishes and gets one message; the error says which step failed.
    pub fn aliveness_test(&self) -> Result<(), String> {
        let settings = QueueSettings {
            durable: false,
            exclusive_owner: None,
            auto_delete: false,
            arguments: FieldTable::default(),
        };
        let (q, _) = self.declare_queue(ALIVENESS_QUEUE, false, settings, 0).map_err(|e| e.reply_text())?;
        let (raw_properties, body): (Box<[u8]>, Box<[u8]>) = (Box::new([0, 0]), b"test_message".to_vec().into());
        let charge = crate::memory::MemoryCharge::content(ALIVENESS_QUEUE, &raw_properties, &body);
        let message = Message {
            exchange: Arc::from(""),
            routing_key: ALIVENESS_QUEUE.into(),
            raw_properties,
            body,
            persistent: false,
            published_ms: crate::message::now_ms(),
            ttl: None,
            store: Default::default(),
            charge,
        };
        enqueue_routed(&self.store, &mut vec![QueueRef(q.clone())], message, None);
        // Earlier runs' messages may still be there if a get failed: take all of them.
        let mut got = false;
        while q.get(true, &mut |m, _left| {
            got |= &*m.message.body == b"test_message";
            q.forget(&m);
        }) {}
        if got {
            Ok(())
        } else {
            Err("aliveness-test queue is empty".into())
        }
    }
}
