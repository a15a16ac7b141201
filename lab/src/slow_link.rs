//! [`SlowLink`]: a plain-TCP forwarder on loopback that hands a server's replies to the client at
//! a fixed rate, counts what it handed over, and can cut every open connection at once. With it a
//! test stops object storage *in the middle of* a download, at a byte count it chooses, instead of
//! before or after one: a whole tarball on loopback arrives in milliseconds.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The most one write hands over; the pause after each write keeps the rate.
const CHUNK: usize = 16 * 1024;

/// A running link, stopped (with every connection through it) on drop.
#[derive(Debug)]
pub struct SlowLink {
    port: u16,
    forwarded: Arc<AtomicU64>,
    cuts: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    /// Listens on an ephemeral loopback port and forwards each connection to
    /// `127.0.0.1:<backend_port>`, the replies at `bytes_per_second`.
    pub async fn start(backend_port: u16, bytes_per_second: u64) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let forwarded = Arc::new(AtomicU64::new(0));
        let (cuts, _) = watch::channel(0_u64);
        let rate = bytes_per_second.max(1);
        let task = {
            let forwarded = Arc::clone(&forwarded);
            let cuts = cuts.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(backend) = TcpStream::connect((Ipv4Addr::LOCALHOST, backend_port)).await
                    else {
                        continue;
                    };
                    let mut cut = cuts.subscribe();
                    cut.mark_unchanged();
                    let forwarded = Arc::clone(&forwarded);
                    tokio::spawn(async move {
                        tokio::select! {
                            () = forward(client, backend, rate, &forwarded) => {}
                            // Dropping both halves closes the client's connection mid-reply: fewer bytes than
                            // the reply's length said.
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Ok(Self {
            port,
            forwarded,
            cuts,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Bytes of replies handed to clients so far, over every connection.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Waits until at least `bytes` were handed over, for at most `timeout`.
    pub async fn wait_forwarded(&self, bytes: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.forwarded() < bytes {
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "only {} of {bytes} bytes went through the link in {timeout:?}",
                    self.forwarded()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Ends every connection open now, in the middle of whatever it carries. New connections are
    /// forwarded as before (to a backend that may be gone by then).
    pub fn cut(&self) {
        self.cuts.send_modify(|generation| *generation += 1);
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// Requests go through at once; replies at the link's rate.
async fn forward(client: TcpStream, backend: TcpStream, rate: u64, forwarded: &AtomicU64) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut backend_read, mut backend_write) = backend.into_split();
    let requests = tokio::io::copy(&mut client_read, &mut backend_write);
    let replies = async {
        let mut buffer = vec![0_u8; CHUNK];
        loop {
            let n = match backend_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            let n = n as u64;
            forwarded.fetch_add(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_micros(n * 1_000_000 / rate)).await;
        }
        let _ = client_write.shutdown().await;
    };
    let _ = tokio::join!(requests, replies);
}
