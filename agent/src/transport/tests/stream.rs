//! Frames over an authenticated connection: round trips in both directions, hostile
//! bytes from a correctly authenticated peer, keep-alives and the idle timeout, and
//! bulk throughput.

use super::*;

#[tokio::test]
async fn pinned_peers_connect_both_ways_and_frames_round_trip() {
    let (a, b) = (node("a"), node("b"));
    let (ea, eb) = (bind(&a, &b.pin), bind(&b, &a.pin));

    let (mut client, mut server) = pair(&ea, &eb, &hello("a")).await;
    assert_eq!(server.remote_address(), addr(&ea));
    assert_eq!(client.remote_address(), addr(&eb));
    assert_eq!(
        within(server.receiver().recv()).await.expect("recv"),
        Some(hello("a"))
    );

    let ack = Frame::Ack(Ack {
        applied: 1,
        durable: 1,
    });
    within(server.sender().send(&ack)).await.expect("send ack");
    assert_eq!(
        within(client.receiver().recv()).await.expect("recv"),
        Some(ack)
    );

    // A full-size write record, then small ones: order and content survive.
    let big = write_record(1, MAX_CHUNK_BYTES);
    within(client.sender().send(&big))
        .await
        .expect("send 1 MiB");
    for seq in 2..10 {
        within(client.sender().send(&write_record(seq, 100)))
            .await
            .expect("send");
    }
    client.sender().finish().expect("finish");
    assert_eq!(
        within(server.receiver().recv()).await.expect("recv"),
        Some(big)
    );
    for seq in 2..10 {
        assert_eq!(
            within(server.receiver().recv()).await.expect("recv"),
            Some(write_record(seq, 100))
        );
    }
    // The finished stream ends cleanly, between frames.
    assert_eq!(within(server.receiver().recv()).await.expect("recv"), None);
    assert!(client.rtt() < Duration::from_secs(1), "{:?}", client.rtt());

    // The same endpoints, the other way round: each both listens and dials.
    let (back, mut accepted) = pair(&eb, &ea, &hello("b")).await;
    assert_eq!(accepted.remote_address(), addr(&eb));
    assert_eq!(
        within(accepted.receiver().recv()).await.expect("recv"),
        Some(hello("b"))
    );
    back.close("done");
    let err = within(accepted.receiver().recv())
        .await
        .expect_err("closed by the peer");
    assert!(matches!(err, TransportError::Read(_)), "{err:?}");
}

/// Sends raw bytes over a correctly authenticated stream and returns what the server's
/// `recv` makes of them. The hostile client keeps its stream open (unless `finish`),
/// so a receiver that waited for the body instead of checking the length would hang.
async fn server_reads(raw: &[u8], finish: bool) -> TransportError {
    let (a, b) = (node("a"), node("b"));
    let (ea, eb) = (bind(&a, &b.pin), bind(&b, &a.pin));
    let target = addr(&eb);
    let (_client, server) = within(async {
        tokio::join!(
            async {
                let mut conn = ea.connect(target).await.expect("connect");
                conn.sender()
                    .stream
                    .write_all(raw)
                    .await
                    .expect("raw write");
                if finish {
                    conn.sender().finish().expect("finish");
                }
                conn
            },
            async { eb.accept().await.expect("endpoint open").expect("accept") },
        )
    })
    .await;
    let (_link, _sender, mut receiver) = server.into_parts();
    within(receiver.recv())
        .await
        .expect_err("hostile bytes must be an error")
}

#[tokio::test]
async fn an_oversized_length_prefix_is_refused_before_the_body() {
    for len in [u32::MAX, MAX_FRAME_BYTES as u32 + 1] {
        let err = server_reads(&len.to_be_bytes(), false).await;
        assert!(
            matches!(err, TransportError::Wire(WireError::TooLarge(n)) if n == len as usize),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn garbage_and_truncated_frames_are_errors() {
    let mut garbage = 8u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 8]);
    let err = server_reads(&garbage, false).await;
    assert!(
        matches!(err, TransportError::Wire(WireError::Malformed(_))),
        "{err:?}"
    );

    // A valid frame with a byte too many inside its length.
    let mut trailing = wire::encode(&hello("a")).expect("encode");
    trailing.push(0);
    let len = u32::try_from(trailing.len() - 4).expect("small");
    trailing[..4].copy_from_slice(&len.to_be_bytes());
    let err = server_reads(&trailing, false).await;
    assert!(
        matches!(err, TransportError::Wire(WireError::Trailing(1))),
        "{err:?}"
    );

    let mut short = 100u32.to_be_bytes().to_vec();
    short.extend_from_slice(&[0; 10]);
    let err = server_reads(&short, true).await;
    assert!(
        matches!(
            err,
            TransportError::Truncated {
                got: 10,
                wanted: 100
            }
        ),
        "{err:?}"
    );
    let err = server_reads(&[0, 0], true).await;
    assert!(
        matches!(err, TransportError::Truncated { got: 2, wanted: 4 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn keep_alives_hold_an_idle_connection_and_a_vanished_peer_times_out() {
    let (a, b) = (node("a"), node("b"));
    let (ea, eb) = (bind_timed(&a, &b.pin, FAST), bind_timed(&b, &a.pin, FAST));
    let (mut client, mut server) = pair(&ea, &eb, &hello("a")).await;
    assert_eq!(
        within(server.receiver().recv()).await.expect("recv"),
        Some(hello("a"))
    );

    // Silent for twice the idle timeout: only keep-alives travel, and they suffice.
    tokio::time::sleep(FAST.idle_timeout * 2).await;
    within(client.sender().send(&hello("a")))
        .await
        .expect("send after idling");
    assert_eq!(
        within(server.receiver().recv()).await.expect("recv"),
        Some(hello("a"))
    );

    // The client vanishes: its socket is swapped for another, so nothing it sends
    // reaches this connection (migration is off) and nothing sent to it is read.
    let started = Instant::now();
    ea.quinn()
        .rebind(UdpSocket::bind(loopback()).expect("socket"))
        .expect("rebind");
    let err = within(server.receiver().recv())
        .await
        .expect_err("dead peer");
    let waited = started.elapsed();
    assert!(matches!(err, TransportError::Read(_)), "{err:?}");
    assert!(
        waited >= FAST.idle_timeout - FAST.keep_alive
            && waited < FAST.idle_timeout + Duration::from_millis(1500),
        "noticed after {waited:?}"
    );
}

#[tokio::test]
async fn a_peer_that_opens_no_stream_is_dropped_after_the_idle_timeout() {
    let (a, b) = (node("a"), node("b"));
    let (ea, eb) = (bind_timed(&a, &b.pin, FAST), bind_timed(&b, &a.pin, FAST));
    // A correctly authenticated connection that never sends a frame.
    let silent = async {
        let conn = ea
            .quinn()
            .connect(addr(&eb), "tandem-peer")
            .expect("start")
            .await
            .expect("handshake");
        conn.closed().await
    };
    let started = Instant::now();
    let (closed, accepted) = within(async { tokio::join!(silent, eb.accept()) }).await;
    let err = accepted.expect("endpoint open").expect_err("no stream");
    assert!(
        matches!(err, TransportError::StreamTimeout { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() >= FAST.idle_timeout,
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn timings_that_cannot_work_are_refused() {
    let (a, b) = (node("a"), node("b"));
    for timing in [
        Timing {
            keep_alive: Duration::ZERO,
            idle_timeout: Duration::from_secs(1),
        },
        Timing {
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
        },
    ] {
        let err = Endpoint::bind(loopback(), &a.identity, &b.pin, timing).expect_err("bad timing");
        assert!(matches!(err, TransportError::Timing(_)), "{err:?}");
    }
}

// Two workers: encoding and comparing megabytes in a debug build must not stall the
// endpoints' timers on the same thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_records_stream_in_order() {
    let (a, b) = (node("a"), node("b"));
    let (ea, eb) = (bind(&a, &b.pin), bind(&b, &a.pin));
    let (client, mut server) = pair(&ea, &eb, &hello("a")).await;
    assert_eq!(
        within(server.receiver().recv()).await.expect("recv"),
        Some(hello("a"))
    );
    const RECORDS: u64 = 32;
    let (_link, mut sender, _receiver) = client.into_parts();
    let started = Instant::now();
    let send = tokio::spawn(async move {
        for seq in 0..RECORDS {
            sender
                .send(&write_record(seq, MAX_CHUNK_BYTES))
                .await
                .expect("send");
        }
        sender.finish().expect("finish");
        sender
    });
    for seq in 0..RECORDS {
        let frame = within(server.receiver().recv()).await.expect("recv");
        assert_eq!(
            frame,
            Some(write_record(seq, MAX_CHUNK_BYTES)),
            "record {seq}"
        );
    }
    assert_eq!(within(server.receiver().recv()).await.expect("recv"), None);
    let elapsed = started.elapsed();
    let _sender = send.await.expect("sender task");
    eprintln!(
        "{RECORDS} MiB of write records in {elapsed:?} ({:.0} MiB/s, {} build, encode and compare included)",
        RECORDS as f64 / elapsed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

/// The actors wait for frames in a `select!` beside other inputs, which drops the
/// receive future whenever another input comes first: a frame half read then must
/// be completed by the next call, not lost or taken for garbage.
#[tokio::test]
async fn a_receive_dropped_mid_frame_loses_nothing() {
    let (a, b) = (node("a"), node("b"));
    let (ea, eb) = (bind(&a, &b.pin), bind(&b, &a.pin));
    let (mut client, server) = pair(&ea, &eb, &hello("a")).await;
    let (_link, _sender, mut receiver) = server.into_parts();
    assert_eq!(
        within(receiver.recv()).await.expect("recv"),
        Some(hello("a"))
    );
    let frame = write_record(7, 64 << 10);
    let bytes = wire::encode(&frame).expect("encode");
    let (head, tail) = bytes.split_at(bytes.len() / 3);
    client.sender().stream.write_all(head).await.expect("head");
    // Long enough for the head to arrive and be taken, too short for a frame.
    let dropped = tokio::time::timeout(Duration::from_millis(200), receiver.recv()).await;
    assert!(dropped.is_err(), "no whole frame yet: {dropped:?}");
    client.sender().stream.write_all(tail).await.expect("tail");
    client
        .sender()
        .send(&write_record(8, 10))
        .await
        .expect("next");
    assert_eq!(within(receiver.recv()).await.expect("recv"), Some(frame));
    assert_eq!(
        within(receiver.recv()).await.expect("recv"),
        Some(write_record(8, 10))
    );
}
