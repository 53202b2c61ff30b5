terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
  # Configure a remote state backend (e.g. S3 with locking) per deployment: `terraform init -backend-config=...`.
}

provider "aws" {
  region = var.region
  default_tags {
    tags = { "app.kubernetes.io/part-of" = "relay", "relay/environment" = var.environment }
  }
}
