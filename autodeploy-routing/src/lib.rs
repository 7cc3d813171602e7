//! # autodeploy-routing
//!
//! The route rules of autodeploy as pure functions: given a request's `Deploy-Route-Rule`
//! header and a consistent snapshot of one deployment's instances (core's [`RouteView`]),
//! decide where the request goes (core's [`Target`]). No I/O, no clock, no global state:
//! randomness comes in as an `&mut impl Rng`, and the round-robin position is a
//! [`RoundRobin`] cursor the caller keeps, one per deployment.
//!
//! | header value | rule | decision |
//! |---|---|---|
//! | (none) | [`RouteRule::Default`] | least-loaded ready instance within the concurrency limit; else queue, cold-starting or scaling out up to the cap |
//! | `scale-out` | [`RouteRule::ScaleOut`] | start a new instance for this request, or 1007 at the cap |
//! | `random` | [`RouteRule::Random`] | a uniformly chosen ready instance, or 1006 |
//! | `round-robin` | [`RouteRule::RoundRobin`] | the ready instances in turn, or 1006 |
//! | an instance id | [`RouteRule::Instance`] | exactly that ready instance, or 1006 |
//! | anything else, or empty | [`RouteRule::UnknownInstance`] | 1006 |
//!
//! Keywords and ids are matched ignoring ASCII case and surrounding ASCII whitespace; see
//! [`RouteRule::parse`]. "Started" in the product's wording means *ready*: a starting instance
//! is never the target of `random`, `round-robin` or an id.
//!
//! ```
//! use autodeploy_core::{ErrorCode, InstanceId, ReadyInstance, RouteView, Target};
//! use autodeploy_routing::{decide, RoundRobin, RouteRule};
//! use rand::SeedableRng;
//!
//! let a: InstanceId = "aaaaaaaa".parse().unwrap();
//! let b: InstanceId = "bbbbbbbb".parse().unwrap();
//! let ready = vec![
//!     ReadyInstance { id: b, in_flight: 0 },
//!     ReadyInstance { id: a, in_flight: 3 },
//! ];
//! // Two ready, none starting, two live, cap 2, at most 4 requests each, none queued.
//! let view = RouteView::new(ready, 0, 2, 2, 4, 0);
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let mut cursor = RoundRobin::new(); // keep one per deployment
//!
//! let mut route = |header: Option<&[u8]>| {
//!     decide(RouteRule::from_header(header), &view, &mut rng, &mut cursor)
//! };
//! assert_eq!(route(None), Target::Instance(b)); // least loaded
//! assert_eq!(route(Some(b"round-robin")), Target::Instance(a));
//! assert_eq!(route(Some(b"round-robin")), Target::Instance(b));
//! assert_eq!(route(Some(b" AAAAAAAA ")), Target::Instance(a));
//! assert_eq!(route(Some(b"zzzzzzzz")), Target::Reject(ErrorCode::RouteTargetNotFound));
//! assert_eq!(route(Some(b"scale-out")), Target::Reject(ErrorCode::ReplicaQuotaExceeded));
//! ```
//!
//! In the gateway the decision runs inside `Controller::acquire`, under the controller's lock,
//! so the view cannot change between deciding and leasing.
//!
//! Modules, one rule each, after pingora's `selection/`:
//!
//! - [`rule`]: the header and its parsing into a [`RouteRule`];
//! - [`decide`](mod@decide): the one entry point, [`decide()`];
//! - [`least_loaded`] (the default), [`scale_out`], [`random`], [`round_robin`], [`sticky`]
//!   (an instance id);
//! - [`backlog`]: how many instances the default rule's backlog needs, `ceil((in_flight +
//!   queued) / concurrency_limit)` up to the cap, as the [`Backlog`] scale policy the
//!   controller asks after every change of the backlog.

pub mod backlog;
pub mod decide;
pub mod least_loaded;
pub mod random;
pub mod round_robin;
pub mod rule;
pub mod scale_out;
pub mod sticky;

pub use autodeploy_core::{RouteView, Target};
pub use backlog::Backlog;
pub use decide::decide;
pub use round_robin::RoundRobin;
pub use rule::{RULE_HEADER, RouteRule, TARGET_HEADER};
