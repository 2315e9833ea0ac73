"""The EC2-compatible Query API at /ec2/: AWS Signature Version 4, EC2's actions on the
same services as the REST API, EC2's XML (version 2016-11-15) and its error codes."""
