#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rotation::database::run::<postgres_rotation::Postgres>().await
}
