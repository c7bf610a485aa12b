#[tokio::main]
async fn main() -> anyhow::Result<()> {
    payment_service::main().await
}
