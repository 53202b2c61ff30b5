data "aws_caller_identity" "current" {}

# One customer-managed key encrypts the DVC bucket, the ECR repositories and EKS secrets.
resource "aws_kms_key" "relay" {
  description         = "Relay ${var.environment}: DVC remote, ECR and EKS secrets"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministers"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}
