//! Garbage on the broker port: 10,000 random, damaged and truncated frames.
//!
//! Contract: a frame that fails validation closes that connection (after an
//! error answer where one can be sent) and never touches stored data; the
//! node stays healthy and keeps serving well-formed clients.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Node, Rng};
use waybill_client::wire::{self, HEADER_LEN, MAGIC, VERSION};
use waybill_client::{Message, Producer, ProducerOptions, SendStatus};

const FRAMES: usize = 10_000;
const THREADS: usize = 4;

/// One bad frame of a kind chosen by `rng`; returns the bytes to send.
fn garbage(rng: &mut Rng) -> Vec<u8> {
    let payload_len = rng.below(300) as usize;
    let payload = rng.bytes(payload_len);
    let kind = match rng.below(3) {
        0 => rng.below(8) as u8, // a real request kind with a random payload
        1 => 64 + rng.below(8) as u8,
        _ => rng.next() as u8,
    };
    match rng.below(6) {
        // Random bytes.
        0 => {
            let n = 1 + rng.below(200) as usize;
            rng.bytes(n)
        }
        // Well-framed random payload (correct CRC): must fail to decode.
        1 => wire::frame(kind, rng.next(), &payload),
        // Bad CRC.
        2 => {
            let mut f = wire::frame(kind, rng.next(), &payload);
            f[16] ^= 0xff;
            f
        }
        // Truncated: the header promises more than is sent.
        3 => {
            let f = wire::frame(kind, rng.next(), &payload);
            let cut = rng.below(f.len() as u64) as usize;
            f[..cut].to_vec()
        }
        // A length over the limit.
        4 => {
            let mut f = wire::frame(kind, rng.next(), &[]);
            f[12..16].copy_from_slice(&(u32::MAX - rng.below(1000) as u32).to_le_bytes());
            f
        }
        // Wrong version.
        _ => {
            let mut f = wire::frame(kind, rng.next(), &payload);
            f[2] = VERSION.wrapping_add(1 + rng.below(200) as u8);
            f
        }
    }
}

fn blast(addr: String, seed: u64, count: usize) -> anyhow::Result<usize> {
    let mut rng = Rng(seed);
    let mut answered = 0;
    for _ in 0..count {
        let mut s = TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        // A peer that closes first may make this write fail: fine.
        let _ = s.write_all(&garbage(&mut rng));
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Read until the server closes; count error answers.
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        if buf.len() >= HEADER_LEN && u16::from_le_bytes([buf[0], buf[1]]) == MAGIC {
            answered += 1;
        }
    }
    Ok(answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_10000_garbage_frames_should_stay_healthy_and_leave_stored_data_unchanged() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let mut stored = Vec::new();
    for i in 0..20 {
        let body = format!("precious {i}");
        let r = producer
            .send(
                "vault",
                Message {
                    body: body.clone().into_bytes(),
                    ..Message::default()
                },
            )
            .await?;
        assert_eq!(r.status, SendStatus::SendOk);
        stored.push((r.id, body));
    }
    let health = |http: String| async move {
        let v: serde_json::Value = reqwest::get(format!("{http}/healthz")).await?.json().await?;
        anyhow::Ok(v)
    };
    let before = health(node.http.clone()).await?;

    let mut threads = Vec::new();
    for t in 0..THREADS {
        let addr = node.broker.clone();
        threads.push(std::thread::spawn(move || {
            blast(addr, 0x5eed + t as u64, FRAMES / THREADS)
        }));
    }
    let mut answered = 0;
    for t in threads {
        answered += t.join().map_err(|_| anyhow::anyhow!("fuzz thread panicked"))??;
    }
    println!("sent {FRAMES} bad frames; {answered} got an error answer before the close");

    let after = health(node.http.clone()).await?;
    assert_eq!(after["status"], "ok");
    assert_eq!(after["log_end"], before["log_end"], "garbage reached the log");
    for (id, body) in &stored {
        let m: serde_json::Value = reqwest::get(format!("{}/api/v1/messages/{id}", node.http))
            .await?
            .json()
            .await?;
        assert_eq!(m["body"].as_str(), Some(body.as_str()));
    }
    // Well-formed clients are still served.
    let r = producer
        .send(
            "vault",
            Message {
                body: b"after the storm".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    assert_eq!(r.status, SendStatus::SendOk);
    Ok(())
}
