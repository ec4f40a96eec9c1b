//! Collection off the call path. Each thread that ends spans writes them into a ring of its
//! own (one producer, one consumer: `rtrb`), so ending a span is a copy and two atomic
//! accesses, with no lock and no allocation. One collector thread per process drains every
//! ring in batches, every [`INTERVAL`] (at once when a ring is half full or a flush asks), and
//! hands the spans to the export queue of the [`Tracing`](super::Tracing) that made each.
//!
//! A ring is bounded: if the collector falls [`CAPACITY`] spans behind one thread, the spans
//! that do not fit are dropped and counted, like those the export queues drop.

use std::{cell::RefCell, time::Duration};

use parking_lot::{Condvar, Mutex};
use rtrb::{Consumer, Producer, RingBuffer};

use super::{export, record::SpanRecord};

/// Spans a thread's ring holds.
const CAPACITY: usize = 2048;
/// How often the collector drains the rings when nothing asks sooner.
const INTERVAL: Duration = Duration::from_millis(50);

thread_local! {
    static RING: RefCell<Option<Producer<SpanRecord>>> = const { RefCell::new(None) };
}

struct Collector {
    /// Every thread's ring (the threads that ended; theirs are drained, then dropped).
    rings: Mutex<Vec<Consumer<SpanRecord>>>,
    control: Mutex<Control>,
    /// Wakes the collector: a flush, a ring half full.
    wake: Condvar,
    /// Wakes flushers.
    drained: Condvar,
}

#[derive(Default)]
struct Control {
    started: bool,
    asked: u64,
    done: u64,
}

static COLLECTOR: Collector = Collector {
    rings: Mutex::new(Vec::new()),
    control: Mutex::new(Control {
        started: false,
        asked: 0,
        done: 0,
    }),
    wake: Condvar::new(),
    drained: Condvar::new(),
};

/// Hands an ended span to the collector.
pub(crate) fn record(span: SpanRecord) {
    let route = span.route;
    let pushed = RING.try_with(|ring| {
        let Ok(mut ring) = ring.try_borrow_mut() else {
            return Err(());
        };
        let producer = ring.get_or_insert_with(register);
        producer.push(span).map_err(|_| ())?;
        Ok(producer.slots() == CAPACITY / 2)
    });
    match pushed {
        Ok(Ok(half_full)) => {
            if half_full {
                COLLECTOR.wake.notify_one();
            }
        }
        // The ring is full (or the thread is ending): the span is lost, and counted.
        _ => export::dropped(route, 1),
    }
}

/// A new ring for this thread; the collector starts with the first.
fn register() -> Producer<SpanRecord> {
    let (producer, consumer) = RingBuffer::new(CAPACITY);
    COLLECTOR.rings.lock().push(consumer);
    let mut control = COLLECTOR.control.lock();
    if !control.started {
        let started = std::thread::Builder::new()
            .name("micro-trace-collect".into())
            .spawn(run);
        match started {
            Ok(_) => control.started = true,
            Err(e) => tracing::warn!(%e, "the span collector did not start: spans wait"),
        }
    }
    producer
}

/// Drains every ring now and hands the spans to their exporters' queues; waits at most
/// `patience`. Whether it finished in time.
pub(crate) fn flush(patience: Duration) -> bool {
    let mut control = COLLECTOR.control.lock();
    if !control.started {
        // No span was ever recorded in this process.
        return true;
    }
    control.asked += 1;
    let want = control.asked;
    COLLECTOR.wake.notify_one();
    let until = std::time::Instant::now() + patience;
    while control.done < want {
        if COLLECTOR
            .drained
            .wait_until(&mut control, until)
            .timed_out()
        {
            return false;
        }
    }
    true
}

fn run() {
    let mut batch = Vec::new();
    loop {
        let asked = {
            let mut control = COLLECTOR.control.lock();
            if control.asked == control.done {
                COLLECTOR.wake.wait_for(&mut control, INTERVAL);
            }
            control.asked
        };
        drain(&mut batch);
        let mut control = COLLECTOR.control.lock();
        control.done = control.done.max(asked);
        COLLECTOR.drained.notify_all();
    }
}

/// Takes every ring's spans into `batch` and routes them.
fn drain(batch: &mut Vec<SpanRecord>) {
    {
        let mut rings = COLLECTOR.rings.lock();
        rings.retain_mut(|ring| {
            if let Ok(chunk) = ring.read_chunk(ring.slots()) {
                batch.extend(chunk);
            }
            // A ring whose thread ended is dropped once empty.
            !(ring.is_abandoned() && ring.is_empty())
        });
    }
    if !batch.is_empty() {
        export::route(batch);
    }
}
