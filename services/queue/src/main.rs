#[tokio::main]
async fn main() -> anyhow::Result<()> {
    queue_service::main().await
}
