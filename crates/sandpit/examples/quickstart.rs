//! Create a sandbox, run a command, move a file in and out, stream a process's output.
//! Run with a daemon up: `SANDPIT_URL=http://127.0.0.1:7070 cargo run -p sandpit --example quickstart`.
use futures_util::StreamExt;
use sandpit::{Client, ExecEvent, Sandbox};

#[tokio::main]
async fn main() -> sandpit::Result<()> {
    // SANDPIT_URL and SANDPIT_API_KEY (or the key file a local daemon writes).
    let client = Client::from_env()?;
    let sandbox = Sandbox::create().client(&client).memory_mb(512).await?;

    let r = sandbox
        .commands()
        .run("echo hello from $(hostname)")
        .await?;
    print!("{}", r.stdout);

    sandbox.files().write("/tmp/in.txt", "1 2 3\n").await?;
    let r = sandbox
        .exec("wc -w < /tmp/in.txt > /tmp/out.txt", sandpit::NO_ARGS)
        .await?;
    assert!(r.success(), "{}", r.stderr());
    let out = sandbox.files().read("/tmp/out.txt").await?;
    println!("words: {}", String::from_utf8_lossy(&out).trim());

    let mut stream = sandbox
        .exec_stream("for i in 1 2 3; do echo tick $i; done", sandpit::NO_ARGS)
        .await?;
    while let Some(event) = stream.next().await {
        if let ExecEvent::Stdout(bytes) = event {
            print!("{}", String::from_utf8_lossy(&bytes));
        }
    }

    sandbox.kill().await?;
    Ok(())
}
