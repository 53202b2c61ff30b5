# Images built from the Dockerfile's targets. Tags are immutable, so a deployed tag never changes.
resource "aws_ecr_repository" "relay" {
  for_each             = toset(["relay-airflow", "relay-worker", "relay-tfx"])
  name                 = each.key
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.relay.arn
  }
}
