//! Observers of named events (the retry loop's, a breaker's, a limiter's): every `on_*` call of
//! a builder adds one, so metrics and a user's own hook can both listen.

use std::sync::Arc;

/// Told of each event `E` with the name it concerns (a service, a breaker, an endpoint).
pub type Observer<E> = Arc<dyn Fn(&str, E) + Send + Sync>;

/// The observer that runs `prior` (if any), then `f`: observers run in the order added.
pub fn add_observer<E: Copy + 'static>(
    prior: Option<Observer<E>>,
    f: impl Fn(&str, E) + Send + Sync + 'static,
) -> Observer<E> {
    match prior {
        None => Arc::new(f),
        Some(prior) => Arc::new(move |name: &str, event: E| {
            prior(name, event);
            f(name, event);
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn observers_run_in_the_order_added() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, b) = (seen.clone(), seen.clone());
        let first = add_observer(None, move |name: &str, n: u8| {
            a.lock().unwrap().push(format!("first {name} {n}"))
        });
        let both = add_observer(Some(first), move |name: &str, n: u8| {
            b.lock().unwrap().push(format!("second {name} {n}"))
        });
        both("svc", 7);
        assert_eq!(*seen.lock().unwrap(), ["first svc 7", "second svc 7"]);
    }
}
