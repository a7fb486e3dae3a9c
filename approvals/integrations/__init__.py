"""Outside systems the portal calls; aws.py is the only module that imports boto3."""
