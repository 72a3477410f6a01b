//! The agent's side of the data path allocates nothing per frame in steady state: tap frame
//! buffers come back to their reader's pool, and UDP datagrams move in batches
//! (`sendmmsg`/`recvmmsg`) between buffers kept from call to call. A counting global
//! allocator watches this test's thread (this binary holds only these tests).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};

use node_core::node::Transmit;
use zt_agent::ports::FramePool;
use zt_agent::transport::{RecvBatch, Transport, UdpTransport, BATCH};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting touches
// only const-initialized thread-locals, which never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCATIONS.with(Cell::get))
}

#[test]
fn tap_frame_buffers_are_reused() {
    let pool = FramePool::default();
    let frame: Vec<u8> = (0..1_500).map(|i| i as u8).collect();
    let round = |pool: &FramePool| {
        // A reader fills a few buffers in one wake-up; the driver drops them when done.
        let mut batch: [Option<zt_agent::ports::FrameBuf>; 8] = Default::default();
        for slot in &mut batch {
            let mut buf = pool.take();
            buf.space()[..frame.len()].copy_from_slice(&frame);
            buf.set_len(frame.len());
            *slot = Some(buf);
        }
        batch
            .iter()
            .flatten()
            .filter(|b| b[..] == frame[..])
            .count()
    };
    round(&pool);
    let (seen, allocations) = allocations_in(|| (0..1_000).map(|_| round(&pool)).sum::<usize>());
    assert_eq!(seen, 8_000);
    assert_eq!(
        allocations, 0,
        "8000 tap frames made {allocations} allocations"
    );
}

#[test]
fn batched_udp_moves_datagrams_without_allocating() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut a = UdpTransport::bind(0).expect("bind a");
        let mut b = UdpTransport::bind(0).expect("bind b");
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, b.port().expect("port")));
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, a.port().expect("port")));
        let datagrams: Vec<Transmit> = (0..BATCH / 2)
            .map(|i| Transmit {
                to,
                data: vec![i as u8; 100 + 40 * i],
                ttl: None,
            })
            .collect();
        let mut batch = RecvBatch::new();
        // One round: a burst out with sendmmsg, then recvmmsg until all are in.
        async fn round(
            a: &mut UdpTransport,
            b: &mut UdpTransport,
            datagrams: &[Transmit],
            batch: &mut RecvBatch,
            from: SocketAddr,
        ) -> (usize, usize) {
            a.send_batch(datagrams).await;
            let (mut received, mut calls) = (0, 0);
            while received < datagrams.len() {
                b.recv_batch(batch).await.expect("receive");
                calls += 1;
                for (sender, data) in batch.iter() {
                    assert_eq!(sender, from);
                    assert_eq!(data, &datagrams[received].data[..]);
                    received += 1;
                }
            }
            (received, calls)
        }
        for _ in 0..3 {
            round(&mut a, &mut b, &datagrams, &mut batch, from).await;
        }
        ALLOCATIONS.with(|n| n.set(0));
        COUNTING.with(|c| c.set(true));
        let (mut received, mut calls) = (0, 0);
        for _ in 0..200 {
            let (r, c) = round(&mut a, &mut b, &datagrams, &mut batch, from).await;
            received += r;
            calls += c;
        }
        COUNTING.with(|c| c.set(false));
        let allocations = ALLOCATIONS.with(Cell::get);
        assert_eq!(received, 200 * datagrams.len());
        assert!(
            calls < received,
            "datagrams came in batches: {calls} receives for {received} datagrams"
        );
        assert_eq!(
            allocations, 0,
            "{received} datagrams made {allocations} allocations"
        );
    });
}

#[test]
fn tap_offloads_segment_and_coalesce_without_allocating() {
    use zt_agent::offload::{Coalescer, Segments, VnetHeader, GSO_TCPV4};
    // An Ethernet + IPv4 + TCP super-frame of 20 KB as TSO hands it over (checksums are
    // recomputed per segment, so they need not be right here).
    let mut super_frame = vec![0u8; 14 + 20 + 20];
    super_frame[12..14].copy_from_slice(&[0x08, 0x00]);
    super_frame[14] = 0x45;
    super_frame[14 + 8] = 64;
    super_frame[14 + 9] = 6;
    super_frame[14 + 12..14 + 20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    super_frame[34 + 12] = 0x50;
    super_frame[34 + 13] = 0x10;
    super_frame.extend((0..20_000).map(|i| i as u8));
    let header = VnetHeader {
        gso_type: GSO_TCPV4,
        gso_size: 1400,
        ..VnetHeader::default()
    };
    let mut segments_out = vec![vec![0u8; 2_000]; 15];
    let mut coalescer = Coalescer::default();
    let round = |segments_out: &mut Vec<Vec<u8>>, coalescer: &mut Coalescer| {
        let segments = Segments::new(&super_frame, &header, 2_000).expect("a TCP super-frame");
        let mut lens = [0usize; 15];
        for (index, len) in lens.iter_mut().enumerate().take(segments.len()) {
            *len = segments.write(index, &mut segments_out[index]);
        }
        let mut written = 0;
        let mut write = |_: &VnetHeader, frame: &[u8]| written += frame.len();
        for (out, len) in segments_out.iter().zip(lens).take(segments.len()) {
            coalescer.push(&out[..len], &mut write);
        }
        coalescer.flush(&mut write);
        written
    };
    round(&mut segments_out, &mut coalescer);
    let (written, allocations) = allocations_in(|| {
        (0..200)
            .map(|_| round(&mut segments_out, &mut coalescer))
            .sum::<usize>()
    });
    assert_eq!(
        written,
        200 * super_frame.len(),
        "coalesced back into one frame"
    );
    assert_eq!(
        allocations, 0,
        "200 super-frames made {allocations} allocations"
    );
}
