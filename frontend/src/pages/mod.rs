//! One module per dashboard route, plus the not-found page.

pub mod cluster;
pub mod consumers;
pub mod dead_step;
pub mod dlq;
pub mod dlq_jobs;
pub mod group_ops;
pub mod matrix;
pub mod messages;
pub mod overview;
pub mod produce;
pub mod timeline;
pub mod topic;
pub mod topics;

use leptos::prelude::*;
use leptos_router::components::A;

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <h1>"Page not found"</h1>
        <p class="empty">"There is no dashboard page here. " <A href="/">"Go to the overview"</A></p>
    }
}
