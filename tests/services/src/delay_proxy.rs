//! A userspace TCP proxy that adds latency, to put a region "farther" from its devices than
//! another on one machine (`tc netem` needs privileges these machines do not give).
//!
//! Each connection to the proxy gets a connection of its own to the upstream. Each direction has
//! a reader thread, which stamps every chunk it reads with `now + delay` and queues it, and a
//! writer thread, which sends each chunk when it is due. Chunks in flight overlap, so the delay is
//! latency, not a throughput cap: a megabyte takes one delay longer, not one delay per chunk. An
//! end of stream is delayed like data and passed on as a half-close (`shutdown(Write)`); a reset
//! cuts both sides. Connection setup with the proxy itself is local and immediate: only data (and
//! its end) is late, so a TLS handshake pays its round trips and a TCP handshake pays none.
//!
//! [`DelayProxy::pause`] simulates an outage seen from the devices: new connections are closed as
//! soon as they are accepted and open ones are cut, until [`DelayProxy::resume`].

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The most bytes one read takes from a socket: one chunk.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks queued per direction before the reader waits (so a stalled peer pushes back).
const QUEUED_CHUNKS: usize = 256;
/// How long connecting to the upstream may take before the client's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP proxy from [`addr`](Self::addr) to an upstream, adding a one-way delay to the data in
/// each direction. Stops listening and cuts every connection when dropped.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use weir_services::DelayProxy;
///
/// let upstream = "127.0.0.1:7443".parse().unwrap();
/// let far = DelayProxy::start("127.0.0.1:0".parse().unwrap(), upstream, Duration::from_millis(40))?;
/// println!("devices of the far region connect to {}", far.addr()); // 80 ms more per round trip
/// far.pause(); // the region is unreachable
/// far.resume();
/// # Ok(())
/// # }
/// ```
pub struct DelayProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the acceptor, the connections and the owner share.
struct Shared {
    delay_nanos: AtomicU64,
    upstream: Mutex<SocketAddr>,
    state: Mutex<State>,
}

struct State {
    paused: bool,
    stopping: bool,
    next_id: u64,
    /// The open connections, to cut them on pause and drop.
    links: HashMap<u64, Arc<Link>>,
}

/// One proxied connection: the client's socket and ours to the upstream.
struct Link {
    client: TcpStream,
    server: TcpStream,
    cut: AtomicBool,
}

/// A chunk read from one side, due on the other at `due`.
struct Chunk {
    due: Instant,
    message: Message,
}

enum Message {
    Data(Vec<u8>),
    /// The sender finished writing: half-close the other side.
    Eof,
    /// Reading failed (a reset): cut the connection.
    Reset,
}

impl DelayProxy {
    /// Listens on `listen` (port 0 picks a free port; see [`addr`](Self::addr)) and forwards
    /// every connection to `upstream`, delaying data by `one_way_delay` in each direction.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way_delay: Duration,
    ) -> io::Result<DelayProxy> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            delay_nanos: AtomicU64::new(nanos(one_way_delay)),
            upstream: Mutex::new(upstream),
            state: Mutex::new(State {
                paused: false,
                stopping: false,
                next_id: 0,
                links: HashMap::new(),
            }),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("delay-proxy-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(DelayProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address the proxy listens on (with the port picked when `listen` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The one-way delay now in force.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.shared.delay_nanos.load(Ordering::Relaxed))
    }

    /// Changes the one-way delay. Data read from now on gets the new delay; data already queued
    /// keeps its own, and the order of bytes never changes.
    pub fn set_delay(&self, one_way_delay: Duration) {
        self.shared
            .delay_nanos
            .store(nanos(one_way_delay), Ordering::Relaxed);
    }

    /// The upstream new connections go to.
    pub fn upstream(&self) -> SocketAddr {
        *lock(&self.shared.upstream)
    }

    /// Sends new connections to `upstream`; open ones keep theirs.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// Cuts every open connection and closes new ones as soon as they are accepted, until
    /// [`resume`](Self::resume): what devices see of a region outage.
    pub fn pause(&self) {
        let mut state = lock(&self.shared.state);
        state.paused = true;
        for link in state.links.values() {
            link.cut();
        }
    }

    /// Accepts and forwards connections again after [`pause`](Self::pause).
    pub fn resume(&self) {
        lock(&self.shared.state).paused = false;
    }

    /// Whether the proxy is paused.
    pub fn is_paused(&self) -> bool {
        lock(&self.shared.state).paused
    }

    /// How many proxied connections are open (both sides connected, not yet closed on both).
    pub fn connections(&self) -> usize {
        lock(&self.shared.state).links.len()
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.shared.state);
            state.stopping = true;
            for link in state.links.values() {
                link.cut();
            }
        }
        // The acceptor blocks in `accept`: one more connection wakes it to see `stopping`.
        let wake = match self.addr {
            SocketAddr::V4(addr) if addr.ip().is_unspecified() => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
            }
            SocketAddr::V6(addr) if addr.ip().is_unspecified() => {
                SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
            }
            addr => addr,
        };
        if TcpStream::connect_timeout(&wake, Duration::from_secs(2)).is_ok()
            && let Some(acceptor) = self.acceptor.take()
        {
            let _ = acceptor.join();
        }
    }
}

impl std::fmt::Debug for DelayProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream())
            .field("delay", &self.delay())
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl Shared {
    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }
}

impl Link {
    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Ends both sides at once: blocked reads return, blocked writes fail.
    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        let state = lock(&shared.state);
        if state.stopping {
            return;
        }
        let paused = state.paused;
        drop(state);
        match accepted {
            // Closed at once: the client sees its connection end before any byte.
            Ok(_) if paused => {}
            Ok((client, _)) => {
                let shared = shared.clone();
                let spawned = thread::Builder::new()
                    .name("delay-proxy-conn".into())
                    .spawn(move || proxy_connection(&shared, client));
                if let Err(err) = spawned {
                    eprintln!("weir-services: delay proxy cannot start a thread: {err}");
                }
            }
            // Out of file descriptors, or a connection reset before we took it.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Connects `client` to the upstream and forwards both ways until both directions end.
fn proxy_connection(shared: &Arc<Shared>, client: TcpStream) {
    let upstream = *lock(&shared.upstream);
    let Ok(server) = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) else {
        return; // Dropping `client` closes it: the upstream is unreachable.
    };
    // Small writes must not wait for Nagle: the only delay is ours.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let link = Arc::new(Link {
        client,
        server,
        cut: AtomicBool::new(false),
    });
    let id = {
        let mut state = lock(&shared.state);
        if state.paused || state.stopping {
            return;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.links.insert(id, link.clone());
        id
    };
    forward_both_ways(shared, &link);
    lock(&shared.state).links.remove(&id);
}

fn forward_both_ways(shared: &Arc<Shared>, link: &Arc<Link>) {
    let handles = (|| -> io::Result<_> {
        Ok((
            link.client.try_clone()?,
            link.client.try_clone()?,
            link.server.try_clone()?,
            link.server.try_clone()?,
        ))
    })();
    let Ok((client_in, client_out, server_in, server_out)) = handles else {
        link.cut();
        return;
    };
    let (to_server, for_server) = sync_channel(QUEUED_CHUNKS);
    let (to_client, for_client) = sync_channel(QUEUED_CHUNKS);
    let mut threads = Vec::new();
    let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
        thread::Builder::new().name(name.into()).spawn(work)
    };
    let (s1, s2, l1) = (shared.clone(), shared.clone(), link.clone());
    for spawned in [
        spawn(
            "delay-proxy-up-r",
            Box::new(move || read_side(&s1, client_in, &to_server)),
        ),
        spawn(
            "delay-proxy-down-r",
            Box::new(move || read_side(&s2, server_in, &to_client)),
        ),
        spawn(
            "delay-proxy-up-w",
            Box::new(move || write_side(&l1, &for_server, server_out)),
        ),
    ] {
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(_) => link.cut(),
        }
    }
    write_side(link, &for_client, client_out);
    for handle in threads {
        let _ = handle.join();
    }
}

/// Reads chunks from `from` and queues each with its due time, until the end of the stream.
fn read_side(shared: &Shared, mut from: TcpStream, to: &SyncSender<Chunk>) {
    let mut buffer = vec![0; CHUNK_BYTES];
    loop {
        let message = match from.read(&mut buffer) {
            Ok(0) => Message::Eof,
            Ok(n) => Message::Data(buffer[..n].to_vec()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => Message::Reset,
        };
        let last = !matches!(message, Message::Data(_));
        let chunk = Chunk {
            due: Instant::now() + shared.delay(),
            message,
        };
        if to.send(chunk).is_err() || last {
            return;
        }
    }
}

/// Writes each queued chunk to `to` when it is due; half-closes `to` at the end of the stream.
fn write_side(link: &Link, from: &Receiver<Chunk>, mut to: TcpStream) {
    for chunk in from {
        let now = Instant::now();
        if chunk.due > now {
            thread::sleep(chunk.due - now);
        }
        if link.is_cut() {
            return;
        }
        match chunk.message {
            Message::Data(bytes) => {
                if to.write_all(&bytes).is_err() {
                    link.cut();
                    return;
                }
            }
            Message::Eof => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Message::Reset => {
                link.cut();
                return;
            }
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY_PORT: &str = "127.0.0.1:0";

    /// An echo server: writes back what it reads, and half-closes when the client does.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(ANY_PORT).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let _ = io::copy(&mut reader, &mut stream);
                    let _ = stream.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }

    /// A server that writes `name` to every connection and closes it.
    fn greeter(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind(ANY_PORT).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.write_all(name.as_bytes());
            }
        });
        addr
    }

    fn proxy(upstream: SocketAddr, delay: Duration) -> DelayProxy {
        DelayProxy::start(ANY_PORT.parse().unwrap(), upstream, delay).unwrap()
    }

    fn connect(proxy: &DelayProxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// Sends `message` and reads it back, returning how long that took.
    fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Duration {
        let start = Instant::now();
        stream.write_all(message).unwrap();
        let mut echo = vec![0; message.len()];
        stream.read_exact(&mut echo).unwrap();
        assert_eq!(echo, message);
        start.elapsed()
    }

    /// Whether the other side ended the connection (EOF or reset) within a few seconds.
    fn is_closed(stream: &mut TcpStream) -> bool {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut byte = [0];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => !matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn a_round_trip_takes_twice_the_delay() {
        let delay = Duration::from_millis(150);
        let proxy = proxy(echo_server(), delay);
        let mut stream = connect(&proxy);
        for _ in 0..3 {
            let elapsed = round_trip(&mut stream, b"ping");
            assert!(elapsed >= 2 * delay, "{elapsed:?}");
            assert!(
                elapsed < 2 * delay + Duration::from_millis(500),
                "{elapsed:?}"
            );
        }
    }

    #[test]
    fn a_new_delay_applies_to_new_data() {
        let proxy = proxy(echo_server(), Duration::ZERO);
        let mut stream = connect(&proxy);
        assert!(round_trip(&mut stream, b"fast") < Duration::from_millis(200));
        proxy.set_delay(Duration::from_millis(200));
        assert_eq!(proxy.delay(), Duration::from_millis(200));
        assert!(round_trip(&mut stream, b"slow") >= Duration::from_millis(400));
    }

    #[test]
    fn chunks_in_flight_overlap() {
        let delay = Duration::from_millis(100);
        let proxy = proxy(echo_server(), delay);
        let stream = connect(&proxy);
        let total = 4 << 20;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let start = Instant::now();
        let mut writer = stream.try_clone().unwrap();
        let sent = data.clone();
        let sender = thread::spawn(move || {
            writer.write_all(&sent).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut echo = Vec::with_capacity(total);
        (&stream).read_to_end(&mut echo).unwrap();
        let elapsed = start.elapsed();
        sender.join().unwrap();
        assert!(echo == data, "the echo differs from what was sent");
        // At least 64 chunks of 64 KiB each way: one after the other, that would take 12.8 s.
        let serialised = 2 * (total / CHUNK_BYTES) as u32 * delay;
        assert!(
            elapsed < serialised / 4,
            "{elapsed:?}, serialised {serialised:?}"
        );
        assert!(elapsed >= 2 * delay, "{elapsed:?}");
    }

    #[test]
    fn the_end_of_the_stream_is_passed_on() {
        let proxy = proxy(echo_server(), Duration::from_millis(50));
        let mut stream = connect(&proxy);
        stream.write_all(b"last words").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut echo = Vec::new();
        // The echo server half-closes only when it has seen our end of stream.
        stream.read_to_end(&mut echo).unwrap();
        assert_eq!(echo, b"last words");
    }

    #[test]
    fn pause_cuts_and_refuses_and_resume_restores() {
        let proxy = proxy(echo_server(), Duration::from_millis(20));
        let mut open = connect(&proxy);
        round_trip(&mut open, b"before");
        assert_eq!(proxy.connections(), 1);

        proxy.pause();
        assert!(proxy.is_paused());
        assert!(
            is_closed(&mut open),
            "an open connection survived the pause"
        );
        let mut refused = connect(&proxy);
        let _ = refused.write_all(b"anyone?");
        assert!(is_closed(&mut refused), "a new connection was served");

        proxy.resume();
        let mut again = connect(&proxy);
        round_trip(&mut again, b"after");
    }

    #[test]
    fn new_connections_go_to_the_new_upstream() {
        let proxy = proxy(greeter("first"), Duration::ZERO);
        let mut greeting = String::new();
        connect(&proxy).read_to_string(&mut greeting).unwrap();
        assert_eq!(greeting, "first");

        let second = greeter("second");
        proxy.set_upstream(second);
        assert_eq!(proxy.upstream(), second);
        greeting.clear();
        connect(&proxy).read_to_string(&mut greeting).unwrap();
        assert_eq!(greeting, "second");
    }

    #[test]
    fn drop_stops_listening_and_cuts_connections() {
        let proxy = proxy(echo_server(), Duration::ZERO);
        let addr = proxy.addr();
        let mut open = connect(&proxy);
        round_trip(&mut open, b"hello");
        drop(proxy);
        assert!(is_closed(&mut open));
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn an_unreachable_upstream_closes_the_connection() {
        let gone = TcpListener::bind(ANY_PORT).unwrap().local_addr().unwrap();
        let proxy = proxy(gone, Duration::ZERO);
        let mut stream = connect(&proxy);
        assert!(is_closed(&mut stream));
    }
}
