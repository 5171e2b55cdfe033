//! An actix actor receiving the messages of a route (`route_to`): the route forwards with
//! `send().await`, so the actor's mailbox capacity applies backpressure.
//!
//! ```text
//! cargo run --example actor_route -- mqtt://127.0.0.1:1883
//! # then, in another shell:
//! mosquitto_pub -t orders/new -m '{"id":1}' -q 1
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::time::Duration;

use actix::prelude::*;
use mqtt_sessions::{Message, SessionManager, SessionOptions};

/// Counts orders.
struct Orders {
    seen: u64,
}

impl Actor for Orders {
    type Context = Context<Self>;
}

impl Handler<Message> for Orders {
    type Result = ();

    fn handle(&mut self, msg: Message, _: &mut Context<Self>) {
        self.seen += 1;
        println!(
            "order #{} from session {} on {}: {}",
            self.seen,
            msg.session,
            msg.topic,
            msg.payload_str().unwrap_or("<binary>")
        );
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());
    let manager = SessionManager::new()?;
    manager
        .add_session(SessionOptions::new("shop", url.as_str()))
        .await?;
    manager
        .wait_for_session("shop", Duration::from_secs(10))
        .await?;
    let orders = Orders { seen: 0 }.start();
    let route = manager.route_to("orders/#", orders.recipient()).await?;
    println!(
        "route {} forwarding orders/# to the Orders actor (Ctrl-C to stop)",
        route.name()
    );
    tokio::signal::ctrl_c().await?;
    route.stop();
    manager.shutdown().await;
    Ok(())
}
