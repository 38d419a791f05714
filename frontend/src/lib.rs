//! Waybill's browser dashboard: a client-side rendered Leptos app, built to
//! wasm32 by `cargo run -p xtask -- dashboard` into `frontend/dist` and served
//! by `waybill serve` at its HTTP address (deep links fall back to
//! `index.html`).
//!
//! # Layout
//! - [`api`]: JSON calls to `/api/v1` (fetch), the one `Load` state every
//!   page renders (loading, error, ready), formatting helpers.
//! - [`chart`]: SVG line charts of the stats history, following the feed.
//! - [`live`]: the server-sent event feed (`/api/v1/events`): stats every
//!   second, and a `changed` counter pages watch to reload without a manual
//!   refresh.
//! - [`pages`]: one module per route (`/`, `/messages`, `/messages/{id}`,
//!   `/topics`, `/topics/{topic}`, `/produce`, `/dlq`, `/consumers`,
//!   `/cluster`, `/matrix`).
//!
//! Invariants: every page reads the API only (no state of its own survives
//! a reload besides the URL); every fetch has a visible loading and error
//! state; the alert banner is on every page.

pub mod api;
pub mod chart;
pub mod live;
pub mod pages;

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::path;
use wasm_bindgen::prelude::wasm_bindgen;

/// Entry point the generated JS glue calls once the module is loaded.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
pub fn App() -> impl IntoView {
    let live = live::Live::connect();
    provide_context(live);
    view! {
        <Router>
            <a class="skip" href="#main">"Skip to content"</a>
            <header class="top">
                <A href="/" attr:class="brand">"Waybill"</A>
                <nav aria-label="Main">
                    <A href="/" exact=true>"Overview"</A>
                    <A href="/messages">"Messages"</A>
                    <A href="/topics">"Topics"</A>
                    <A href="/produce">"Produce"</A>
                    <A href="/dlq">"Dead letters"</A>
                    <A href="/consumers">"Consumers"</A>
                    <A href="/cluster">"Cluster"</A>
                    <A href="/matrix">"Matrix"</A>
                </nav>
                <live::Indicator/>
            </header>
            <live::NodeDown/>
            <live::AlertBanner/>
            <TokenPrompt/>
            <main id="main" tabindex="-1">
                <Routes fallback=|| view! { <pages::NotFound/> }>
                    <Route path=path!("/") view=pages::overview::Overview/>
                    <Route path=path!("/messages") view=pages::messages::Messages/>
                    <Route path=path!("/messages/:id") view=pages::timeline::Timeline/>
                    <Route path=path!("/topics") view=pages::topics::Topics/>
                    <Route path=path!("/topics/:topic") view=pages::topic::Topic/>
                    <Route path=path!("/produce") view=pages::produce::Produce/>
                    <Route path=path!("/dlq") view=pages::dlq::Dlq/>
                    <Route path=path!("/consumers") view=pages::consumers::Consumers/>
                    <Route path=path!("/cluster") view=pages::cluster::Cluster/>
                    <Route path=path!("/matrix") view=pages::matrix::Matrix/>
                    <Route path=path!("/matrix/messages/:id") view=pages::matrix::LostMessage/>
                </Routes>
            </main>
        </Router>
    }
}

/// Asks for the node's `--auth-token` once the API answered 401; keeps it
/// in this browser and reloads so every call and the live feed carry it.
#[component]
fn TokenPrompt() -> impl IntoView {
    let needed = api::auth_needed();
    let value = RwSignal::new(String::new());
    let refused = api::token().is_some();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        api::set_token(value.get_untracked().trim());
        if let Some(w) = web_sys::window() {
            let _ = w.location().reload();
        }
    };
    view! {
        <Show when=move || needed.get()>
            <form class="token banner" role="alert" on:submit=submit>
                <label for="token">
                    {if refused {
                        "The node refused the access token this browser sent. Token:"
                    } else {
                        "This node requires an access token (waybill serve --auth-token). Token:"
                    }}
                </label>
                <input
                    id="token"
                    name="token"
                    type="password"
                    autocomplete="current-password"
                    prop:value=move || value.get()
                    on:input=move |ev| value.set(event_target_value(&ev))
                />
                <button type="submit">"Use token"</button>
            </form>
        </Show>
    }
}
