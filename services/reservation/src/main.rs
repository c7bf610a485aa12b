#[tokio::main]
async fn main() -> anyhow::Result<()> {
    reservation_service::main().await
}
