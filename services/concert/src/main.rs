#[tokio::main]
async fn main() -> anyhow::Result<()> {
    concert_service::main().await
}
