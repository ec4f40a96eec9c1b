//! The spans a handler opens with the `tracing` crate, recorded as children of the call's
//! server span and exported with it; the calls made inside one are its children.

use micro_core::{CallContext, TraceParent};
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

use super::{
    collect,
    record::{Began, SpanRecord},
    service::new_span_id,
};

/// A `tracing-subscriber` layer that records the spans opened while a traced call is handled
/// (a handler's `tracing::info_span!(..)`, `#[tracing::instrument]`) into the call's trace:
/// the parent of such a span is the enclosing one, else the call's server span. Spans opened
/// outside a sampled call are not recorded, and cost nothing here.
///
/// Add it to the application's subscriber, with the level of the spans to record:
///
/// ```
/// use tracing_subscriber::{Layer as _, filter::LevelFilter, layer::SubscriberExt as _};
/// let subscriber = tracing_subscriber::registry()
///     .with(micro_wrappers::trace::HandlerSpans.with_filter(LevelFilter::INFO));
/// # let _ = subscriber;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HandlerSpans;

/// What a recorded span keeps until it closes.
struct Opened {
    /// The span as its children see it.
    me: TraceParent,
    parent_id: u64,
    began: Began,
    fields: Vec<(&'static str, String)>,
}

struct Fields<'a>(&'a mut Vec<(&'static str, String)>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}")));
    }
}

impl<S> Layer<S> for HandlerSpans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let enclosing = span
            .scope()
            .skip(1)
            .find_map(|s| s.extensions().get::<Opened>().map(|o| o.me.clone()));
        let Some(parent) = enclosing.or_else(|| CallContext::with_current(|c| c.trace()).flatten())
        else {
            return;
        };
        if !parent.sampled {
            return;
        }
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        span.extensions_mut().insert(Opened {
            me: TraceParent {
                span_id: new_span_id(),
                ..parent.clone()
            },
            parent_id: parent.span_id,
            began: Began::now(),
            fields,
        });
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(opened) = span.extensions_mut().get_mut::<Opened>()
        {
            values.record(&mut Fields(&mut opened.fields));
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(opened) = span.extensions_mut().remove::<Opened>() else {
            return;
        };
        let (begin_time_unix_ns, duration_ns) = opened.began.times();
        collect::record(SpanRecord {
            trace_id: opened.me.trace_id,
            span_id: opened.me.span_id,
            parent_id: opened.parent_id,
            begin_time_unix_ns,
            duration_ns,
            route: opened.me.route,
            endpoint: None,
            name: span.metadata().name(),
            code: None,
            error: None,
            properties: opened.fields,
        });
    }
}

/// The innermost recorded span the current task is in, as its children see it.
pub(crate) fn current() -> Option<TraceParent> {
    tracing::dispatcher::get_default(|dispatch| {
        let id = dispatch.current_span().id()?.clone();
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(&id)?;
        span.scope()
            .find_map(|s| s.extensions().get::<Opened>().map(|o| o.me.clone()))
    })
}
