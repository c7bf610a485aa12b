#[tokio::main]
async fn main() -> anyhow::Result<()> {
    member_balance_service::main().await
}
